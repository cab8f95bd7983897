//! A client of a Confluent-compatible schema registry (Confluent's, Apicurio's `ccompat` API,
//! Karapace): register a subject's schema, look schemas up by id with a cache (records carry
//! the id; no HTTP call per record), check compatibility, set a subject's compatibility rule.
//! Outages are retried with backoff; refusals become [`Error::Registry`] naming the subject
//! and what the registry said.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::base::avro::Schema;
use crate::base::config::RegistryConfig;
use crate::base::error::{CodecError, Error, Result};
pub(crate) use crate::base::schema::SchemaType;
use crate::base::schema::WriterSchemas;

/// A schema the registry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its global id (what framed records carry).
    pub id: u32,
    /// How it is written.
    pub schema_type: SchemaType,
    /// The schema text.
    pub schema: String,
}

/// Attempts for a request the registry did not answer (connection refused, 5xx).
const ATTEMPTS: u32 = 6;

/// The client; cheap to clone, caches shared.
#[derive(Clone)]
pub struct SchemaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
    backoff: Duration,
    by_id: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
    registered: Mutex<HashMap<(String, String), u32>>,
}

impl SchemaRegistry {
    /// A client of the registry at `url` (e.g. `http://127.0.0.1:8081`, or Apicurio's
    /// `http://host:8080/apis/ccompat/v7`).
    pub fn new(url: &str) -> Result<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::config(
                "schema_registry",
                format!("`{url}` is not an http:// or https:// URL of a schema registry"),
            ));
        }
        let http = http_client(None)?;
        Ok(SchemaRegistry {
            inner: Arc::new(Inner {
                base: url.trim_end_matches('/').to_owned(),
                http,
                auth: None,
                backoff: Duration::from_millis(200),
                by_id: Mutex::new(HashMap::new()),
                registered: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A client as `config` says: its URL, basic authentication and CA.
    pub fn from_config(config: &RegistryConfig) -> Result<Self> {
        let mut registry = SchemaRegistry::new(&config.url)?;
        if let Some(ca) = &config.ca_file {
            let http = http_client(Some(ca))?;
            registry = registry.rebuilt(|inner| inner.http = http);
        }
        Ok(match &config.basic_auth {
            Some((user, password)) => registry.with_basic_auth(user, password),
            None => registry,
        })
    }

    /// Sends HTTP basic authentication (Confluent Cloud's API key and secret).
    pub fn with_basic_auth(self, user: &str, password: &str) -> Self {
        self.rebuilt(|inner| inner.auth = Some((user.to_owned(), password.to_owned())))
    }

    /// The first wait between attempts when the registry does not answer (doubled each time).
    pub fn with_backoff(self, backoff: Duration) -> Self {
        self.rebuilt(|inner| inner.backoff = backoff)
    }

    fn rebuilt(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            base: shared.base.clone(),
            http: shared.http.clone(),
            auth: shared.auth.clone(),
            backoff: shared.backoff,
            by_id: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        });
        change(&mut inner);
        SchemaRegistry {
            inner: Arc::new(inner),
        }
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id. A schema the
    /// subject's compatibility rule refuses is an error naming the subject and the rule.
    pub async fn register(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
    ) -> Result<u32> {
        let key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = lock(&self.inner.registered).get(&key) {
            return Ok(*id);
        }
        let body = schema_body(schema_type, schema);
        let path = format!("/subjects/{}/versions", encode(subject));
        let answer = self
            .call(subject, reqwest::Method::POST, &path, Some(body))
            .await?;
        let id = id_of(&answer, subject)?;
        lock(&self.inner.registered).insert(key, id);
        self.remember(id, schema_type, schema);
        Ok(id)
    }

    /// The schema with global id `id` (cached: asked once per id).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>> {
        if let Some(found) = lock(&self.inner.by_id).get(&id) {
            return Ok(found.clone());
        }
        let subject = format!("schema id {id}");
        let answer = self
            .call(
                &subject,
                reqwest::Method::GET,
                &format!("/schemas/ids/{id}"),
                None,
            )
            .await?;
        let schema = answer["schema"].as_str().ok_or_else(|| Error::Registry {
            subject: subject.clone(),
            message: format!("the answer has no schema: {answer}"),
        })?;
        let schema_type = SchemaType::parse(answer["schemaType"].as_str());
        let references = answer["references"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        if schema_type == SchemaType::Avro && !references.is_empty() {
            let referenced = self.referenced(&subject, references).await?;
            let inlined =
                crate::base::avro_references::inline(schema, &referenced).map_err(|e| {
                    Error::Registry {
                        subject: subject.clone(),
                        message: format!("resolving its references: {e}"),
                    }
                })?;
            return Ok(self.remember(id, schema_type, &inlined));
        }
        // JSON Schema and Protobuf readers use only the id's kind (serde and prost read the
        // payload), so their references need not be fetched.
        Ok(self.remember(id, schema_type, schema))
    }

    /// The texts of the schemas `references` name (`{name, subject, version}`), and of those
    /// they reference in turn, each asked once.
    async fn referenced(&self, subject: &str, references: &[Value]) -> Result<Vec<String>> {
        let mut pending: Vec<Value> = references.to_vec();
        let (mut seen, mut texts) = (std::collections::HashSet::new(), Vec::new());
        while let Some(reference) = pending.pop() {
            let (Some(of), Some(version)) =
                (reference["subject"].as_str(), reference["version"].as_i64())
            else {
                return Err(Error::Registry {
                    subject: subject.to_owned(),
                    message: format!("a reference without subject and version: {reference}"),
                });
            };
            if !seen.insert((of.to_owned(), version)) {
                continue;
            }
            let path = format!("/subjects/{}/versions/{version}", encode(of));
            let answer = self.call(of, reqwest::Method::GET, &path, None).await?;
            let text = answer["schema"].as_str().ok_or_else(|| Error::Registry {
                subject: of.to_owned(),
                message: format!("the answer has no schema: {answer}"),
            })?;
            texts.push(text.to_owned());
            if let Some(more) = answer["references"].as_array() {
                pending.extend(more.iter().cloned());
            }
        }
        Ok(texts)
    }

    /// The id of `schema` under `subject`, if it is registered there (no registration).
    pub async fn lookup(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
    ) -> Result<Option<u32>> {
        let path = format!("/subjects/{}", encode(subject));
        let body = schema_body(schema_type, schema);
        match self
            .call(subject, reqwest::Method::POST, &path, Some(body))
            .await
        {
            Ok(answer) => id_of(&answer, subject).map(Some),
            Err(Error::Registry { message, .. }) if message.contains("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Why `schema` may not follow `subject`'s latest version: the registry's verbose
    /// messages (which name the field), or empty when it gives none.
    pub async fn incompatibilities(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
    ) -> Vec<String> {
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            encode(subject)
        );
        let body = schema_body(schema_type, schema);
        match self
            .call(subject, reqwest::Method::POST, &path, Some(body))
            .await
        {
            Ok(answer) => answer["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The subject's compatibility rule (its own, else the registry's default).
    pub async fn compatibility(&self, subject: &str) -> Option<String> {
        let path = format!("/config/{}?defaultToGlobal=true", encode(subject));
        let answer = self
            .call(subject, reqwest::Method::GET, &path, None)
            .await
            .ok()?;
        answer["compatibilityLevel"]
            .as_str()
            .or_else(|| answer["compatibility"].as_str())
            .map(str::to_owned)
    }

    /// The schema with global id `id`, asked until the registry answers: an unreachable
    /// registry (or a 5xx, a 429) is retried with backoff for as long as it takes, so a record
    /// waiting for its writer's schema waits instead of being lost, until `stopping` is set (the
    /// worker stops). An id the registry does not know is [`CodecError::UnknownSchema`]; any
    /// other refusal (credentials, a bad answer) is [`CodecError::Registry`].
    pub async fn schema_by_id_held(
        &self,
        id: u32,
        stopping: &AtomicBool,
    ) -> Result<Arc<RegisteredSchema>, CodecError> {
        let mut wait = self.inner.backoff;
        loop {
            let message = match self.schema_by_id(id).await {
                Ok(found) => return Ok(found),
                Err(Error::Registry { message, .. }) => message,
                Err(e) => e.to_string(),
            };
            let unknown = message.contains("HTTP 404") || message.contains("HTTP 422");
            if unknown {
                return Err(CodecError::UnknownSchema {
                    id,
                    message: format!(
                        "{message}; is {} the registry the producer used (RILL_SCHEMA_REGISTRY_URL)?",
                        self.url()
                    ),
                });
            }
            let transient = message.starts_with("no answer from")
                || message.contains("HTTP 5")
                || message.contains("HTTP 429");
            if !transient {
                return Err(CodecError::Registry(message));
            }
            if stopping.load(Ordering::Acquire) {
                return Err(CodecError::Registry(format!(
                    "the worker stopped while the registry was unreachable ({message})"
                )));
            }
            tracing::warn!(id, error = %message, ?wait, "holding the record until the schema registry answers");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// The subject's latest version: its number and schema.
    pub async fn latest(&self, subject: &str) -> Result<(u32, Arc<RegisteredSchema>)> {
        let path = format!("/subjects/{}/versions/latest", encode(subject));
        let answer = self
            .call(subject, reqwest::Method::GET, &path, None)
            .await?;
        let version = answer["version"].as_u64().unwrap_or(0);
        let id = id_of(&answer, subject)?;
        let schema_type = SchemaType::parse(answer["schemaType"].as_str());
        let schema = answer["schema"].as_str().unwrap_or_default();
        let found = self.remember(id, schema_type, schema);
        Ok((u32::try_from(version).unwrap_or(u32::MAX), found))
    }

    /// Whether `schema` may be registered under `subject` next, by the subject's compatibility
    /// rule (true for a subject without versions).
    pub async fn is_compatible(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
    ) -> Result<bool> {
        let path = format!(
            "/compatibility/subjects/{}/versions/latest",
            encode(subject)
        );
        let body = schema_body(schema_type, schema);
        match self
            .call(subject, reqwest::Method::POST, &path, Some(body))
            .await
        {
            Ok(answer) => Ok(answer["is_compatible"].as_bool().unwrap_or(false)),
            // 40401: no such subject, 40402: no version yet: anything goes.
            Err(Error::Registry { message, .. })
                if message.contains("(40401)") || message.contains("(40402)") =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets `subject`'s compatibility rule (`BACKWARD`, `FORWARD`, `FULL`, their `_TRANSITIVE`
    /// forms, or `NONE`).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<()> {
        let path = format!("/config/{}", encode(subject));
        let body = json!({ "compatibility": level });
        self.call(subject, reqwest::Method::PUT, &path, Some(body))
            .await
            .map(|_| ())
    }

    fn remember(&self, id: u32, schema_type: SchemaType, schema: &str) -> Arc<RegisteredSchema> {
        lock(&self.inner.by_id)
            .entry(id)
            .or_insert_with(|| {
                Arc::new(RegisteredSchema {
                    id,
                    schema_type,
                    schema: schema.to_owned(),
                })
            })
            .clone()
    }

    /// One request, retried with backoff while the registry does not answer or answers 5xx.
    async fn call(
        &self,
        subject: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.inner.base);
        let mut wait = self.inner.backoff;
        let mut attempt = 1;
        loop {
            let outcome = self.send(&method, &url, body.as_ref()).await;
            let retry = match &outcome {
                Err(Failure::Unreachable(_)) => true,
                Err(Failure::Answer(status, _)) => *status >= 500,
                Err(Failure::Untrusted(_)) | Ok(_) => false,
            };
            if !retry || attempt >= ATTEMPTS {
                return outcome.map_err(|f| f.into_error(subject, &url, attempt));
            }
            tracing::warn!(
                subject,
                url,
                attempt,
                ?wait,
                "the schema registry did not answer; retrying"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(10));
            attempt += 1;
        }
    }

    async fn send(
        &self,
        method: &reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> std::result::Result<Value, Failure> {
        let mut request = self.inner.http.request(method.clone(), url).header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some((user, password)) = &self.inner.auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(Failure::of_request)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(Failure::of_request)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(Failure::Answer(status, value))
        }
    }
}

/// The HTTP client: 10 s per request, no idle connections kept (requests are rare, and a
/// writer schema fetched for a record runs on a runtime of its own), `ca`'s certificate
/// trusted besides the system's.
fn http_client(ca: Option<&std::path::Path>) -> Result<reqwest::Client> {
    let setting = "schema_registry (RILL_SCHEMA_REGISTRY_CA)";
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca)
            .map_err(|e| Error::config(setting, format!("cannot read `{}`: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            Error::config(
                setting,
                format!("`{}` is not a PEM certificate: {e}", ca.display()),
            )
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| {
        Error::config(
            "schema_registry",
            format!(
                "building an HTTP client: {e} (https:// needs rill's `ssl` feature, on by default)"
            ),
        )
    })
}

/// Writer schemas through a registry, parsed once per registry and id for the process (kept
/// for its life: the readers built from them are cached with them). Ids the registry does not
/// know are remembered for [`UNKNOWN_FOR`], so poison records do not each cost a request.
pub(crate) struct RegistryWriters {
    registry: SchemaRegistry,
    stopping: AtomicBool,
    unknown: Mutex<HashMap<u32, (std::time::Instant, String)>>,
}

/// How long an id the registry did not know is taken as unknown without asking again.
const UNKNOWN_FOR: Duration = Duration::from_secs(30);

type ParsedSchemas = Mutex<HashMap<(String, u32), &'static Schema>>;

fn parsed_schemas() -> &'static ParsedSchemas {
    static PARSED: std::sync::OnceLock<ParsedSchemas> = std::sync::OnceLock::new();
    PARSED.get_or_init(Default::default)
}

impl RegistryWriters {
    pub(crate) fn new(registry: SchemaRegistry) -> Arc<Self> {
        Arc::new(RegistryWriters {
            registry,
            stopping: AtomicBool::new(false),
            unknown: Mutex::new(HashMap::new()),
        })
    }

    /// A record held for the registry gives up (the worker stops).
    pub(crate) fn stop_holding(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

impl RegistryWriters {
    /// The registered schema `id`, from the client's cache or asked (held through outages).
    fn registered(&self, id: u32) -> Result<Arc<RegisteredSchema>, CodecError> {
        if let Some(found) = lock(&self.registry.inner.by_id).get(&id) {
            return Ok(found.clone());
        }
        if let Some((at, message)) = lock(&self.unknown).get(&id)
            && at.elapsed() < UNKNOWN_FOR
        {
            return Err(CodecError::UnknownSchema {
                id,
                message: message.clone(),
            });
        }
        let (registry, stopping) = (self.registry.clone(), &self.stopping);
        let found = run_blocking(async move { registry.schema_by_id_held(id, stopping).await })?;
        if let Err(CodecError::UnknownSchema { message, .. }) = &found {
            lock(&self.unknown).insert(id, (std::time::Instant::now(), message.clone()));
        }
        found
    }
}

impl WriterSchemas for RegistryWriters {
    fn schema_type(&self, id: u32) -> Result<SchemaType, CodecError> {
        self.registered(id).map(|found| found.schema_type)
    }

    fn avro(&self, id: u32) -> Result<&'static Schema, CodecError> {
        let key = (self.registry.url().to_owned(), id);
        if let Some(found) = lock(parsed_schemas()).get(&key) {
            return Ok(found);
        }
        let found = self.registered(id)?;
        if found.schema_type != SchemaType::Avro {
            return Err(CodecError::SchemaKind {
                id,
                found: found.schema_type.as_str(),
                expected: SchemaType::Avro.as_str(),
            });
        }
        let parsed = crate::base::avro::parse(&found.schema)?;
        let mut all = lock(parsed_schemas());
        Ok(*all
            .entry(key)
            .or_insert_with(|| Box::leak(Box::new(parsed))))
    }
}

/// Runs `work` to completion from synchronous code (a decode step): on a multi-threaded
/// caller's runtime, in `block_in_place`; else on a runtime and thread of its own.
pub(crate) fn run_blocking<T: Send>(
    work: impl std::future::Future<Output = T> + Send,
) -> Result<T, CodecError> {
    match tokio::runtime::Handle::try_current() {
        // On the runtime the client was built on (its I/O driver), this thread handed over.
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(work)))
        }
        // A current-thread runtime waits: its tasks pause until the registry answers.
        _ => on_a_thread_of_its_own(work),
    }
}

/// Runs `work` on a current-thread runtime on a thread of its own, and waits for it.
fn on_a_thread_of_its_own<T: Send>(
    work: impl std::future::Future<Output = T> + Send,
) -> Result<T, CodecError> {
    let failed = |what: String| CodecError::Registry(format!("fetching a writer schema: {what}"));
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("rill-registry".into())
            .spawn_scoped(scope, move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(work))
            })
            .map_err(|e| failed(format!("no thread: {e}")))?;
        match thread.join() {
            Ok(done) => done.map_err(|e| failed(format!("no runtime: {e}"))),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.inner.base)
            .field("auth", &self.inner.auth.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// What went wrong with one request.
enum Failure {
    /// No answer (refused, reset, timed out): retried, an outage.
    Unreachable(String),
    /// The registry's TLS certificate is not trusted: a setting to fix, not retried.
    Untrusted(String),
    Answer(u16, Value),
}

impl Failure {
    /// A request that got no answer: its error with the causes reqwest wraps (the TLS
    /// library's reason is the innermost).
    fn of_request(e: reqwest::Error) -> Failure {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        // OpenSSL's "certificate verify failed" (an unknown CA, a wrong host name); a
        // handshake cut short by a restarting registry is an outage like any other.
        if text.to_ascii_lowercase().contains("certificate") {
            Failure::Untrusted(text)
        } else {
            Failure::Unreachable(text)
        }
    }

    fn into_error(self, subject: &str, url: &str, attempts: u32) -> Error {
        let message = match self {
            Failure::Unreachable(e) => format!(
                "no answer from {url} after {attempts} attempts ({e}); is the registry running, and is the URL (RILL_SCHEMA_REGISTRY_URL) right?"
            ),
            Failure::Untrusted(e) => format!(
                "the TLS connection to {url} failed ({e}); if the registry's certificate is signed by a private CA, set RILL_SCHEMA_REGISTRY_CA to that CA's PEM file"
            ),
            Failure::Answer(status, body) => {
                let code = body["error_code"].as_i64().unwrap_or(i64::from(status));
                let said = body["message"]
                    .as_str()
                    .map_or_else(|| body.to_string(), str::to_owned);
                match status {
                    401 | 403 => format!(
                        "{url} refused the credentials (HTTP {status}){}; check the user and password (RILL_SCHEMA_REGISTRY_BASIC_AUTH)",
                        if said.is_empty() || said == "\"\"" {
                            String::new()
                        } else {
                            format!(": {said}")
                        }
                    ),
                    409 => format!(
                        "the schema is incompatible with the subject's latest version under its compatibility rule ({code}): {said}"
                    ),
                    _ => format!("HTTP {status} ({code}): {said}"),
                }
            }
        };
        Error::Registry {
            subject: subject.to_owned(),
            message,
        }
    }
}

fn schema_body(schema_type: SchemaType, schema: &str) -> Value {
    match schema_type {
        // Avro is the default type; some registries refuse an explicit "AVRO" in old versions.
        SchemaType::Avro => json!({ "schema": schema }),
        other => json!({ "schema": schema, "schemaType": other.as_str() }),
    }
}

fn id_of(answer: &Value, subject: &str) -> Result<u32> {
    answer["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| Error::Registry {
            subject: subject.to_owned(),
            message: format!("the answer has no schema id: {answer}"),
        })
}

/// A subject in a URL path (subjects may hold `.`, `-`, `:` and, with record naming, `$`).
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_escaped_in_paths_and_errors_name_the_fix() {
        assert_eq!(encode("orders-value"), "orders-value");
        assert_eq!(encode("a b/c$d"), "a%20b%2Fc%24d");
        let refused = Failure::Answer(409, json!({"error_code": 409, "message": "field tier"}))
            .into_error("orders-value", "http://r/subjects", 1)
            .to_string();
        assert!(
            refused.contains("orders-value") && refused.contains("incompatible"),
            "{refused}"
        );
        let down = Failure::Unreachable("connection refused".into())
            .into_error("s", "http://r", 6)
            .to_string();
        assert!(
            down.contains("RILL_SCHEMA_REGISTRY_URL") && down.contains("6 attempts"),
            "{down}"
        );
        assert!(SchemaRegistry::new("localhost:8081").is_err());
    }
}
