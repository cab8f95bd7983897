//! Tracing export: OpenTelemetry spans over OTLP (gRPC or HTTP/protobuf), configured by the
//! standard `OTEL_*` variables or [`TelemetryConfig`].
//!
//! With an endpoint set, the worker exports:
//! - a span per record an agent processes, named `<topic> process` (kind consumer), with
//!   OpenTelemetry's messaging attributes (`messaging.system`, `messaging.destination.name`,
//!   `messaging.destination.partition.id`, `messaging.kafka.offset`,
//!   `messaging.consumer.group.name`, `messaging.operation.type`) and `rill.agent`. Its
//!   parent is the W3C `traceparent` header of the record, so a trace started by any producer
//!   continues through rill. The `tracing` spans an agent creates while handling the record
//!   nest under it (tracing-opentelemetry bridge);
//! - a span per send, `<topic> publish` (kind producer), child of the record's span, whose
//!   context travels in the sent record's `traceparent`/`tracestate` headers (sinks, topics,
//!   repartition topics keep the headers of the record they forward; dead letters keep the
//!   failed record's);
//! - `rill.commit`, `rill.rebalance` and `rill.recovery` spans.
//!
//! Sampling follows `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` (default: parent-based,
//! always on). Without an endpoint no exporter runs, no per-record span is created, and the
//! hot path checks one relaxed atomic flag.
//!
//! The CLI (`App::main`) sets this up itself. A program that starts workers with
//! `App::start` calls [`init`] once (it installs the global `tracing` subscriber), or adds
//! [`layer`] to a subscriber of its own.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::base::error::{Error, Result};
use crate::base::message::Headers;

/// Which `tracing` spans are exported (`RILL_TRACE_FILTER` overrides it, `EnvFilter`
/// syntax): rill's and the app's at INFO, none of the HTTP/gRPC stack's or the exporter's own
/// (which would also feed back into the exporter).
const DEFAULT_TRACE_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Set once a rill OpenTelemetry layer exists: per-record spans are created only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether per-record spans are being exported.
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Wire protocol of the OTLP exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// Where spans go. Empty (the default): the standard `OTEL_*` variables decide, and without
/// an endpoint among them no exporter runs.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// OTLP endpoint, e.g. `http://127.0.0.1:4317` (else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Protocol (else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`:
    /// `grpc` or `http/protobuf`; default gRPC).
    pub protocol: Option<OtlpProtocol>,
    /// `service.name` (else `OTEL_SERVICE_NAME`; default the app id).
    pub service_name: Option<String>,
    /// Headers (gRPC metadata) sent with every export, e.g. an API key (else
    /// `OTEL_EXPORTER_OTLP_HEADERS`; `key=value` pairs, comma-separated). Never logged.
    pub headers: Vec<(String, String)>,
}

/// What [`TelemetryConfig`] and the environment resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    /// Explicit endpoint (else the exporter reads the `OTEL_*` endpoint variables itself).
    endpoint: Option<String>,
    protocol: OtlpProtocol,
    service_name: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl TelemetryConfig {
    fn resolve(&self, app_id: &str) -> Result<Option<Resolved>> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        if self.endpoint.is_none() && !from_env {
            return Ok(None);
        }
        let protocol = match self.protocol {
            Some(p) => p,
            None => {
                let var = if env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                } else {
                    "OTEL_EXPORTER_OTLP_PROTOCOL"
                };
                match env(var).as_deref() {
                    None | Some("grpc") => OtlpProtocol::Grpc,
                    Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
                    Some(other) => {
                        return Err(Error::config(
                            var,
                            format!("`{other}` is not supported; use `grpc` or `http/protobuf`"),
                        ));
                    }
                }
            }
        };
        Ok(Some(Resolved {
            endpoint: self.endpoint.clone(),
            protocol,
            service_name: self
                .service_name
                .clone()
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| app_id.to_owned()),
        }))
    }
}

/// Keeps the exporter running; flushes and stops it when dropped (or on [`Telemetry::shutdown`]).
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing spans to the OTLP endpoint");
        }
    }
}

/// The OpenTelemetry layer for a `tracing` subscriber of the program's own, and the handle
/// that keeps its exporter running; `None` when no endpoint is configured. Call it inside a
/// tokio runtime (the gRPC exporter's connection lives there).
pub fn layer<S>(
    config: &TelemetryConfig,
    app_id: &str,
) -> Result<Option<(impl tracing_subscriber::Layer<S>, Telemetry)>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let Some(resolved) = config.resolve(app_id)? else {
        return Ok(None);
    };
    let exporter = match resolved.protocol {
        OtlpProtocol::Grpc => grpc_exporter(config, &resolved)?,
        OtlpProtocol::HttpProtobuf => http_exporter(config, &resolved)?,
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(resolved.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("rill");
    tracing::info!(protocol = ?resolved.protocol, endpoint = resolved.endpoint.as_deref().map_or_else(|| "from OTEL_* variables".to_owned(), redact_url), service = %resolved.service_name, "exporting traces over OTLP");
    let filter = trace_filter()?;
    // From here on agents create record spans: the layer must be installed (`init` does).
    ACTIVE.store(true, Ordering::Relaxed);
    Ok(Some((
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter),
        Telemetry { provider },
    )))
}

/// The OTLP/gRPC span exporter, with `config.headers` as gRPC metadata.
fn grpc_exporter(
    config: &TelemetryConfig,
    resolved: &Resolved,
) -> Result<opentelemetry_otlp::SpanExporter> {
    let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(e) = &resolved.endpoint {
        b = b.with_endpoint(e.clone());
    }
    if !config.headers.is_empty() {
        b = opentelemetry_otlp::WithTonicConfig::with_metadata(b, grpc_metadata(&config.headers)?);
    }
    b.build().map_err(|e| exporter_error(&e, resolved))
}

/// `TelemetryConfig::headers` as gRPC metadata (keys lowercase).
fn grpc_metadata(headers: &[(String, String)]) -> Result<tonic::metadata::MetadataMap> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| {
                Error::config(
                    "TelemetryConfig::headers",
                    format!("`{k}` is not a valid header name"),
                )
            })?;
        let value = v.parse().map_err(|_| {
            Error::config(
                "TelemetryConfig::headers",
                format!("the value of `{k}` is not a valid header value"),
            )
        })?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// The OTLP/HTTP span exporter (protobuf bodies).
fn http_exporter(
    config: &TelemetryConfig,
    resolved: &Resolved,
) -> Result<opentelemetry_otlp::SpanExporter> {
    let mut b = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(e) = &resolved.endpoint {
        // An explicit endpoint is the signal's URL (as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
        let url = if e.ends_with("/v1/traces") {
            e.clone()
        } else {
            format!("{}/v1/traces", e.trim_end_matches('/'))
        };
        b = b.with_endpoint(url);
    }
    if !config.headers.is_empty() {
        b = opentelemetry_otlp::WithHttpConfig::with_headers(
            b,
            config.headers.iter().cloned().collect(),
        );
    }
    b.build().map_err(|e| exporter_error(&e, resolved))
}

/// Why the exporter could not be built, without the endpoint's credentials.
fn exporter_error(e: &opentelemetry_otlp::ExporterBuildError, resolved: &Resolved) -> Error {
    // The builder's message may quote the endpoint, credentials included.
    let mut message = e.to_string();
    if let Some(url) = &resolved.endpoint {
        message = message.replace(url.as_str(), &redact_url(url));
    }
    Error::config(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("cannot set up the OTLP exporter: {message}"),
    )
}

/// Which spans are exported: `RILL_TRACE_FILTER`, else `DEFAULT_TRACE_FILTER`.
fn trace_filter() -> Result<tracing_subscriber::EnvFilter> {
    let filter = env("RILL_TRACE_FILTER").unwrap_or_else(|| DEFAULT_TRACE_FILTER.to_owned());
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
        Error::config(
            "RILL_TRACE_FILTER",
            format!("`{filter}` is not a tracing filter ({e}); e.g. `info,my_crate=debug`"),
        )
    })
}

/// Installs the global `tracing` subscriber: logs to stderr filtered by `filter` (`EnvFilter`
/// syntax), plus span export when an endpoint is configured. Returns the exporter's handle
/// (keep it alive until the program ends). Call it once, inside a tokio runtime; a program
/// that already installed a subscriber adds [`layer`] to it instead (this is then an error).
pub fn init(config: &TelemetryConfig, app_id: &str, filter: &str) -> Result<Option<Telemetry>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (otel, guard) = match layer(config, app_id)? {
        Some((l, g)) => (Some(l), Some(g)),
        None => (None, None),
    };
    // Spans of agents' records pass whatever the log filter says; the filter applies to logs.
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(log_layer(filter))
        .try_init();
    if installed.is_err() && guard.is_some() {
        drop(guard);
        return Err(Error::config(
            "tracing subscriber",
            "a global tracing subscriber is already installed; add `rill::telemetry::layer` to it instead of calling `init`",
        ));
    }
    Ok(guard)
}

/// Installs logging to stderr only (commands other than `worker`, and the fallback when the
/// exporter cannot be set up, so its error is seen).
pub(crate) fn init_logs(filter: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(log_layer(filter))
        .try_init();
}

fn log_layer<S>(filter: &str) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter)
}

use tracing_subscriber::Layer as _;

/// A URL for logs: credentials in it (`scheme://user:password@host`) are masked.
pub(crate) fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split('/').next().and_then(|h| h.rsplit_once('@')) {
            Some((_, host)) => {
                let path = &rest[rest.find('/').unwrap_or(rest.len())..];
                format!("{scheme}://[redacted]@{host}{path}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

struct HeaderExtractor<'a>(&'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut Headers);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.0.retain(|(k, _)| k != key);
        self.0.insert(key, value.into_bytes());
    }
}

/// The span of one record an agent processes (see the module docs).
pub(crate) fn record_span(
    record: &crate::base::message::RawRecord,
    agent: &str,
    group: &str,
    system: &'static str,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: "rill",
        "process",
        otel.name = %format_args!("{} process", record.topic),
        otel.kind = "consumer",
        messaging.system = system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %record.topic,
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = tracing::field::Empty,
        rill.offset = tracing::field::Empty,
        messaging.consumer.group.name = group,
        rill.agent = agent,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if system == "kafka" {
        span.record("messaging.kafka.offset", record.offset);
    } else {
        span.record("rill.offset", record.offset);
    }
    if record.headers.get("traceparent").is_some() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(&record.headers));
        let _ = span.set_parent(parent);
    }
    span
}

/// Marks a record's span failed (the agent's error or panic, or a decode failure).
pub(crate) fn record_failed(span: &tracing::Span, kind: &str, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message);
    span.record("error.type", kind);
}

/// A producer span for a send from within `parent`, its context injected into `headers`.
pub(crate) fn publish(
    parent: &tracing::Span,
    topic: &str,
    system: &'static str,
    headers: &mut Headers,
) {
    let span = tracing::info_span!(
        target: "rill",
        parent: parent,
        "publish",
        otel.name = %format_args!("{topic} publish"),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = topic,
    );
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked_for_logs() {
        assert_eq!(
            redact_url("https://key:s3cret@otel.example:4318/v1/traces"),
            "https://[redacted]@otel.example:4318/v1/traces"
        );
        assert_eq!(redact_url("http://127.0.0.1:4317"), "http://127.0.0.1:4317");
    }

    #[test]
    fn no_endpoint_no_exporter() {
        // The test process sets no OTEL_* endpoint.
        if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            assert_eq!(TelemetryConfig::default().resolve("app").ok(), Some(None));
        }
        let explicit = TelemetryConfig {
            endpoint: Some("http://127.0.0.1:4317".into()),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            service_name: None,
            headers: Vec::new(),
        };
        let r = explicit.resolve("app").ok().flatten();
        assert_eq!(
            r.map(|r| (r.protocol, r.service_name)),
            Some((
                OtlpProtocol::HttpProtobuf,
                env("OTEL_SERVICE_NAME").unwrap_or_else(|| "app".into())
            ))
        );
    }
}
