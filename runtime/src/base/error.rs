//! The one error type of the runtime. Each variant says what failed, where (topic, partition,
//! offset, setting) and, where there is one, what the user can do about it.

use std::path::PathBuf;

/// Everything that can go wrong in rill.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; the message names the setting and the fix.
    #[error("invalid setting `{setting}`: {message}")]
    Config {
        /// The setting, as the user spells it (CLI flag, env var or builder method).
        setting: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A record could not be encoded or decoded.
    #[error("codec error on topic `{topic}`: {source}")]
    Codec {
        /// Topic the record belongs to.
        topic: String,
        /// The underlying codec failure.
        #[source]
        source: CodecError,
    },
    /// Two declarations of one topic disagree on its record type.
    #[error(
        "topic `{topic}` is declared with two record types: `{first_type}` at {first_at} and `{second_type}` at {second_at}; a topic carries one type, so rename one topic or use the same type"
    )]
    TopicTypeConflict {
        /// Topic name.
        topic: String,
        /// First type and where it was declared.
        first_type: &'static str,
        /// Location of the first declaration.
        first_at: String,
        /// Second type.
        second_type: &'static str,
        /// Location of the second declaration.
        second_at: String,
    },
    /// An agent was wired wrongly (for example asked for a stream twice).
    #[error("agent `{agent}`: {message}")]
    Agent {
        /// Agent name.
        agent: String,
        /// What went wrong.
        message: String,
    },
    /// A request (`Requests::ask`) got no reply, or a refusal.
    #[error("request to `{topic}`: {message}")]
    Request {
        /// The topic the request was sent to.
        topic: String,
        /// What happened, and the likely cause.
        message: String,
    },
    /// The schema registry refused a request or could not be reached.
    #[error("schema registry, {subject}: {message}")]
    Registry {
        /// The subject (or schema id) the request was about.
        subject: String,
        /// What the registry said, and the likely fix.
        message: String,
    },
    /// A table could not be read (outside an agent: a `TableReader`).
    #[error("table `{table}`: {message}")]
    Table {
        /// Table name.
        table: String,
        /// What went wrong, and the fix where there is one.
        message: String,
    },
    /// A send was attempted where no producer is available.
    #[error(
        "`{0}` was called outside an agent; inside an agent it joins the agent's commit, elsewhere use `App::producer()` or a `Producer` handed to an `App::task`"
    )]
    NoContext(&'static str),
    /// A topic does not exist and could not be created.
    #[error(
        "unknown topic `{0}`: declare it in an agent or with `App::topic`, or create it on the broker"
    )]
    UnknownTopic(String),
    /// A topic rill owns (repartition, changelog, retry, dead letters) exists with other
    /// partitions or settings than rill needs; rill refuses to use it.
    #[error("internal topic `{topic}` {problem}. {fix}")]
    InternalTopic {
        /// Topic name.
        topic: String,
        /// What differs: both values.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// An exactly-once transaction failed and was aborted: nothing of it is visible.
    #[error("exactly-once transaction failed and was aborted: {0}")]
    Transaction(String),
    /// Kafka (librdkafka) reported an error.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What rill was doing.
        context: String,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// LMDB reported an error.
    #[error("lmdb at {path}: {context}: {source}", path = path.display())]
    Storage {
        /// The environment's directory.
        path: PathBuf,
        /// What rill was doing.
        context: String,
        /// The heed error.
        #[source]
        source: heed::Error,
    },
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What rill was doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The worker is shutting down or a component it needs has stopped.
    #[error("shutting down: {0}")]
    Shutdown(String),
    /// An error returned by user code.
    #[error(transparent)]
    User(#[from] Box<dyn std::error::Error + Send + Sync>),
}

/// Shows the message and its causes, so `fn main() -> rill::Result<()>` prints something
/// readable when it fails.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !self.to_string().contains(&text) {
                write!(f, "\n  caused by: {text}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    pub(crate) fn config(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            setting: setting.into(),
            message: message.into(),
        }
    }

    /// An agent wired or used wrongly.
    pub(crate) fn agent(agent: &str, message: impl Into<String>) -> Self {
        Error::Agent {
            agent: agent.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps any error from user code.
    pub fn user<E: Into<Box<dyn std::error::Error + Send + Sync>>>(err: E) -> Self {
        Error::User(err.into())
    }

    /// True for the agent's own errors (`Error::user`, `?` on its error types), which the
    /// agent's failure policy handles per record. The others are rill reporting a broken
    /// deployment (a table written from the wrong partition, stored state that no longer
    /// decodes, storage or broker failures): dead-lettering every record would bury them, so
    /// they stop the worker whatever the policy.
    pub fn is_record_failure(&self) -> bool {
        matches!(self, Error::User(_))
    }
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// postcard (compact binary) failed.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    /// Raw bytes were not valid UTF-8 for a `String` record.
    #[error("invalid utf-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
    /// The record had no value (a Kafka tombstone).
    #[error("the record has no value (null payload)")]
    NullValue,
    /// The value is larger than `Config::max_record_bytes`.
    #[error("the value is {size} bytes, more than the {max} allowed (RILL_MAX_RECORD_BYTES)")]
    Oversized {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The codec cannot represent this type.
    #[error("codec `{codec}` cannot carry `{ty}`: {hint}")]
    Unsupported {
        /// Codec name.
        codec: &'static str,
        /// Rust type.
        ty: &'static str,
        /// What to use instead.
        hint: &'static str,
    },
    /// Avro failed (a value that does not fit the schema, a writer schema the reader cannot
    /// resolve, truncated bytes).
    #[error("avro: {0}")]
    Avro(String),
    /// The frame's schema is of another format than the topic's record type.
    #[error("schema id {id} is a {found} schema, not {expected} as the record type's")]
    SchemaKind {
        /// The id in the frame.
        id: u32,
        /// Its format.
        found: &'static str,
        /// The record type's.
        expected: &'static str,
    },
    /// The schema registry refused to give a record's writer schema (credentials, a bad
    /// answer), or the worker stopped while waiting for it.
    #[error("schema registry: {0}")]
    Registry(String),
    /// A Protocol Buffers message did not encode or decode.
    #[error("protobuf: {0}")]
    Protobuf(String),
    /// A registry-coded topic without a binding: the worker binds the topics it declares
    /// when it starts.
    #[error(
        "topic `{topic}` has no schema-registry binding: declare it on an agent (source or sink) or with `App::topic`, and set the registry (RILL_SCHEMA_REGISTRY_URL or `App::schema_registry`)"
    )]
    Unbound {
        /// The topic.
        topic: String,
    },
    /// The frame names a schema id the registry does not have.
    #[error("schema id {id} is unknown to the schema registry ({message})")]
    UnknownSchema {
        /// The id in the frame.
        id: u32,
        /// What the registry said.
        message: String,
    },
    /// A registry-coded key (`#[record(key_codec = "avro")]`) that does not encode or decode
    /// as its key schema says.
    #[error("record key: {0}")]
    Key(String),
    /// A schema-registry frame was expected and not found.
    #[error("schema registry frame: {0}")]
    Frame(#[from] crate::base::wire::FrameError),
}

/// `Result` with rill's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of a caught panic (an agent's or a timer's).
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}
