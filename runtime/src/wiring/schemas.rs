//! Binds the registry-coded topics a worker declares (`#[record(codec = "avro")]`, "protobuf",
//! "json_schema") to their
//! subjects when it starts, so no record waits on the registry for its own schema:
//!
//! - a topic the worker writes (an agent's sink, an `App::topic`) gets the id of its value
//!   type's schema under the subject its naming strategy gives: registered there when
//!   `auto_register` is on (a schema the subject's compatibility rule refuses stops the start,
//!   naming the subject, the rule and what the registry found incompatible), looked up when
//!   off (a schema not registered stops the start);
//! - a topic it only reads is looked up, never registered (a reader does not add versions to
//!   a subject its producers own, as Confluent's deserializers do not): records of its id, if
//!   registered, decode without resolution; other ids are fetched when first met. A
//!   `Producer` send to such a topic (Faust-style apps send to their own agents' topics)
//!   binds it for writing then, as a Confluent serializer would on its first send
//!   ([`ensure_writable`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::base::codec::Codec;
use crate::base::record::Record;

use crate::base::config::{Config, RegistryConfig};
use crate::base::error::{Error, Result};
use crate::base::registry_keys::{self, KeyBinding, KeySchema};
use crate::base::schema::{self, Binding, RecordSchema, SchemaType};
use crate::base::spec::TopicSpec;
use crate::io::registry::{RegistryWriters, SchemaRegistry};

/// A registry-coded topic's values (or keys): their schema and subject, and whether the
/// worker writes them.
pub(crate) struct SchemaTopic {
    pub(crate) topic: String,
    pub(crate) schema: &'static RecordSchema,
    pub(crate) subject: String,
    pub(crate) writes: bool,
    /// The topic's keys, not its values (`#[record(key_codec = "avro")]`).
    pub(crate) key: Option<KeySchema>,
}

/// The registry-coded topics among `reads` and `writes` (a topic in both is written), in name
/// order, values before keys; a value type whose schema does not parse is an error naming it.
pub(crate) fn schema_topics<'a>(
    registry: &RegistryConfig,
    reads: impl IntoIterator<Item = &'a TopicSpec>,
    writes: impl IntoIterator<Item = &'a TopicSpec>,
) -> Result<Vec<SchemaTopic>> {
    let mut found: BTreeMap<(String, bool), SchemaTopic> = BTreeMap::new();
    let tagged = reads
        .into_iter()
        .map(|s| (s, false))
        .chain(writes.into_iter().map(|s| (s, true)));
    for (spec, writes) in tagged {
        let Some(schema) = registry_schema(spec)? else {
            continue;
        };
        let subject = registry
            .subject_strategy
            .subject(&spec.name, &schema.full_name());
        let entry = found
            .entry((spec.name.clone(), false))
            .or_insert(SchemaTopic {
                topic: spec.name.clone(),
                schema,
                subject,
                writes,
                key: None,
            });
        entry.writes |= writes;
        if let Some(key) = key_schema(spec)? {
            let entry = found
                .entry((spec.name.clone(), true))
                .or_insert(SchemaTopic {
                    topic: spec.name.clone(),
                    schema: key.record_schema(),
                    // Keys are primitive types: subjects by topic whatever the values' strategy.
                    subject: format!("{}-key", spec.name),
                    writes,
                    key: Some(key),
                });
            entry.writes |= writes;
        }
    }
    Ok(found.into_values().collect())
}

/// `spec`'s registry key, if its record declares one the format can carry.
fn key_schema(spec: &TopicSpec) -> Result<Option<KeySchema>> {
    let Some(key) = (spec.key_schema)() else {
        return Ok(None);
    };
    key.check().map_err(|source| Error::Codec {
        topic: spec.name.clone(),
        source,
    })?;
    Ok(Some(key))
}

/// `spec`'s schema when its codec is a registry codec.
fn registry_schema(spec: &TopicSpec) -> Result<Option<&'static RecordSchema>> {
    if !spec.codec.is_registry() {
        return Ok(None);
    }
    let schema = (spec.schema)().ok_or_else(|| {
        Error::config(
            format!("topic `{}`", spec.name),
            format!(
                "its codec is {}, but `{}` has no registry schema; mark it `#[record(codec = \"{}\")]`",
                spec.codec.name(),
                spec.value_type,
                spec.codec.name()
            ),
        )
    })?;
    schema.check().map_err(|source| Error::Codec {
        topic: spec.name.clone(),
        source,
    })?;
    Ok(Some(schema))
}

/// The registry of `config`, or an error naming the first registry-coded topic.
pub(crate) fn registry_of(config: &Config, first: &SchemaTopic) -> Result<SchemaRegistry> {
    let registry = config.schema_registry.as_ref().ok_or_else(|| {
        Error::config(
            "schema_registry (RILL_SCHEMA_REGISTRY_URL)",
            format!(
                "topic `{}` carries `{}`, a schema-registry record, which needs a schema registry; set RILL_SCHEMA_REGISTRY_URL (e.g. http://127.0.0.1:8081) or `App::schema_registry`",
                first.topic, first.schema.rust_type
            ),
        )
    })?;
    SchemaRegistry::from_config(registry)
}

/// Binds every registry-coded topic among `reads` and `writes` (see the module's comment);
/// the writer schemas they decode with (`None` without such topics).
pub(crate) async fn bind<'a>(
    config: &Config,
    reads: impl IntoIterator<Item = &'a TopicSpec>,
    writes: impl IntoIterator<Item = &'a TopicSpec>,
) -> Result<Option<Arc<RegistryWriters>>> {
    let Some(settings) = &config.schema_registry else {
        // Without a registry, any registry-coded topic is the error `registry_of` names.
        let all = schema_topics(&RegistryConfig::new(""), reads, writes)?;
        return match all.first() {
            Some(first) => registry_of(config, first).map(|_| None),
            None => Ok(None),
        };
    };
    let topics = schema_topics(settings, reads, writes)?;
    let Some(first) = topics.first() else {
        return Ok(None);
    };
    crate::base::avro::limit_allocations(config.max_record_bytes);
    let registry = registry_of(config, first)?;
    let writers = RegistryWriters::new(registry.clone());
    let app = (registry.clone(), settings.clone(), writers.clone());
    for topic in &topics {
        let id = writer_id(&registry, settings, topic).await?;
        tracing::info!(topic = %topic.topic, subject = %topic.subject, ?id, "bound to the schema registry");
        if let Some(key) = topic.key {
            let writers = writers.clone();
            registry_keys::bind_key(
                &topic.topic,
                KeyBinding {
                    schema: key,
                    id,
                    writers,
                },
            );
            continue;
        }
        if id.is_none() {
            lock_mut(read_only()).insert(topic.topic.clone(), app.clone());
        }
        schema::bind(
            &topic.topic,
            Binding {
                subject: topic.subject.clone(),
                id,
                writers: writers.clone(),
            },
        );
    }
    *lock_mut(current()) = Some(app);
    Ok(Some(writers))
}

/// A started app's registry, settings and writer schemas.
type AppRegistry = (SchemaRegistry, RegistryConfig, Arc<RegistryWriters>);

/// The latest app whose binding succeeded: what a send binds an undeclared topic with.
fn current() -> &'static RwLock<Option<AppRegistry>> {
    static CURRENT: RwLock<Option<AppRegistry>> = RwLock::new(None);
    &CURRENT
}

/// Topics bound for reading only, with the app that declared them: a send to one binds it
/// with that app's registry and settings (not another app's of the same process).
fn read_only() -> &'static RwLock<std::collections::HashMap<String, AppRegistry>> {
    static READ_ONLY: std::sync::OnceLock<RwLock<std::collections::HashMap<String, AppRegistry>>> =
        std::sync::OnceLock::new();
    READ_ONLY.get_or_init(Default::default)
}

fn lock_mut<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Binds `topic` for writing `V` if it is a registry-coded topic without a writer id yet (one
/// only read): registered (or looked up) as a sink's would be at start. Sends through the
/// `Producer` call it.
pub(crate) async fn ensure_writable<V: Record>(topic: &str, codec: Codec) -> Result<()> {
    let (value, key) = (
        unwritable::<V>(topic, codec),
        unwritable_key::<V>(topic, codec),
    );
    if value.is_none() && key.is_none() {
        return Ok(());
    }
    let declared = read_only()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(topic)
        .cloned();
    let latest = || current().read().unwrap_or_else(|p| p.into_inner()).clone();
    let Some((registry, settings, writers)) = declared.or_else(latest) else {
        // No registry: encoding names the missing binding and the setting.
        return Ok(());
    };
    if let Some(schema) = value {
        let target = SchemaTopic {
            topic: topic.to_owned(),
            schema,
            subject: settings
                .subject_strategy
                .subject(topic, &schema.full_name()),
            writes: true,
            key: None,
        };
        let id = writer_id(&registry, &settings, &target).await?;
        let writers = writers.clone();
        let subject = target.subject;
        schema::bind(
            topic,
            Binding {
                subject,
                id,
                writers,
            },
        );
    }
    if let Some(key) = key {
        let target = SchemaTopic {
            topic: topic.to_owned(),
            schema: key.record_schema(),
            subject: format!("{topic}-key"),
            writes: true,
            key: Some(key),
        };
        let id = writer_id(&registry, &settings, &target).await?;
        registry_keys::bind_key(
            topic,
            KeyBinding {
                schema: key,
                id,
                writers,
            },
        );
    }
    Ok(())
}

/// [`ensure_writable`] from synchronous code (`Requests::ask` encodes before it is awaited):
/// blocks the calling thread while the topic is bound, once per topic, as a writer schema met
/// for the first time does.
pub(crate) fn ensure_writable_now<V: Record>(topic: &str, codec: Codec) -> Result<()> {
    if unwritable::<V>(topic, codec).is_none() && unwritable_key::<V>(topic, codec).is_none() {
        return Ok(());
    }
    crate::io::registry::run_blocking(ensure_writable::<V>(topic, codec)).map_err(|source| {
        Error::Codec {
            topic: topic.to_owned(),
            source,
        }
    })?
}

/// `V`'s registry key when `topic` is registry-coded and its keys have no writer id yet.
fn unwritable_key<V: Record>(topic: &str, codec: Codec) -> Option<KeySchema> {
    V::key_schema()
        .filter(|_| codec.is_registry())
        .filter(|_| registry_keys::key_binding(topic).is_none_or(|b| b.id.is_none()))
}

/// `V`'s registry schema when `topic` is registry-coded and has no writer id yet.
fn unwritable<V: Record>(topic: &str, codec: Codec) -> Option<&'static RecordSchema> {
    V::registry_schema()
        .filter(|_| codec.is_registry())
        .filter(|_| schema::binding(topic).is_none_or(|b| b.id.is_none()))
}

/// The id `topic`'s records are written with (`None` for a topic only read, whose schema is
/// not registered).
async fn writer_id(
    registry: &SchemaRegistry,
    settings: &RegistryConfig,
    topic: &SchemaTopic,
) -> Result<Option<u32>> {
    let (kind, text) = (topic.schema.schema_type, topic.schema.text.as_str());
    // A key schema is registered even for a topic only read: it is the primitive type every
    // producer of the topic registers, and rill needs its id to place keys in partitions as
    // those producers do (by the framed bytes).
    if (topic.writes || topic.key.is_some()) && settings.auto_register {
        return match registry.register(&topic.subject, kind, text).await {
            Ok(id) => Ok(Some(id)),
            Err(Error::Registry { subject, message }) if message.contains("incompatible") => {
                Err(incompatible(registry, topic, subject, message).await)
            }
            Err(e) => Err(e),
        };
    }
    let id = registry.lookup(&topic.subject, kind, text).await?;
    if topic.writes && id.is_none() {
        return Err(Error::Registry {
            subject: topic.subject.clone(),
            message: format!(
                "the schema of `{}` (which topic `{}` is written with) is not registered under this subject, and auto-registration is off (RILL_SCHEMA_AUTO_REGISTER=off); register it (`<app> schema --register`) or turn auto-registration on",
                topic.schema.rust_type, topic.topic
            ),
        });
    }
    Ok(id)
}

/// A refused registration, with the subject's rule and what the registry found incompatible.
async fn incompatible(
    registry: &SchemaRegistry,
    topic: &SchemaTopic,
    subject: String,
    message: String,
) -> Error {
    let (kind, text) = (topic.schema.schema_type, topic.schema.text.as_str());
    let rule = registry
        .compatibility(&topic.subject)
        .await
        .unwrap_or_else(|| "unknown".to_owned());
    let why = registry.incompatibilities(&topic.subject, kind, text).await;
    let why = if why.is_empty() {
        String::new()
    } else {
        format!("; what is incompatible: {}", why.join("; "))
    };
    Error::Registry {
        subject,
        message: format!(
            "`{}` cannot be registered: the subject's compatibility rule is {rule}. {message}{why}. Evolve the struct as the rule allows ({}), or change the rule",
            topic.schema.rust_type,
            evolution_advice(kind),
        ),
    }
}

/// How a struct evolves compatibly in `kind`, for a refused registration's message.
fn evolution_advice(kind: SchemaType) -> &'static str {
    match kind {
        SchemaType::Avro => {
            "under BACKWARD: new fields need a default, an `Option` gets null; remove only fields with a default"
        }
        SchemaType::Json => {
            "under BACKWARD, in rill's closed JSON Schemas: add fields as `Option`s (not required); removing a field is refused"
        }
        SchemaType::Protobuf => {
            "keep field numbers and types; add fields with new numbers; never reuse a removed field's number"
        }
    }
}

/// The schemas of the registry-coded topics of an app, for the `schema` command: `(topic,
/// subject, schema text)`, registered first when `register` (which needs the registry).
pub(crate) async fn describe(
    config: &Config,
    topics: &[TopicSpec],
    register: bool,
) -> Result<Vec<(String, String, String, Option<u32>)>> {
    let default = RegistryConfig::new("");
    let settings = config.schema_registry.as_ref().unwrap_or(&default);
    let found = schema_topics(settings, std::iter::empty(), topics)?;
    let mut out = Vec::new();
    let registry = match (register, found.first()) {
        (true, Some(first)) => Some(registry_of(config, first)?),
        _ => None,
    };
    // Registering is what auto-registration does, refusals explained the same way.
    let registering = RegistryConfig {
        auto_register: true,
        ..settings.clone()
    };
    for topic in found {
        let id = match &registry {
            Some(registry) => writer_id(registry, &registering, &topic).await?,
            None => None,
        };
        out.push((topic.topic, topic.subject, topic.schema.text.clone(), id));
    }
    Ok(out)
}
