//! OpenTelemetry export in the tests: rill's telemetry pointed at a receiver, receivers speaking
//! the collector protocols of `opentelemetry-proto` (traces and metrics over gRPC, traces over
//! HTTP with protobuf bodies) on free ports of 127.0.0.1, and the helpers that read and check
//! the spans they received.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use rill::telemetry::{OtlpProtocol, Telemetry, TelemetryConfig};

// ---------------------------------------------------------------------------------------------
// Exporting

/// Installs rill's telemetry, exporting to the receiver at `addr` over `protocol` as
/// `service`. It installs the process-wide subscriber: one such test a test binary.
pub(crate) fn export_to(
    addr: SocketAddr,
    protocol: OtlpProtocol,
    service: &str,
    app_id: &str,
) -> Telemetry {
    let config = TelemetryConfig {
        // No path: rill appends the protocol's (`/v1/traces` over HTTP).
        endpoint: Some(format!("http://{addr}")),
        protocol: Some(protocol),
        service_name: Some(service.into()),
        headers: Vec::new(),
    };
    rill::telemetry::init(&config, app_id, "warn")
        .expect("telemetry init")
        .expect("an exporter for the explicit endpoint")
}

/// Flushes the batch exporter and stops it (a blocking call, made on a blocking thread).
pub(crate) async fn flush(telemetry: Telemetry) {
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flush the exporter");
}

// ---------------------------------------------------------------------------------------------
// Receivers

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) service: Option<String>,
    pub(crate) span: Span,
}

/// The spans a receiver got, in arrival order (clones share them).
#[derive(Clone, Default)]
pub(crate) struct Spans(Arc<Mutex<Vec<Got>>>);

impl Spans {
    /// Every span received so far.
    pub(crate) fn all(&self) -> Vec<Got> {
        self.0.lock().expect("received spans").clone()
    }

    /// The spans received once `enough` holds of them, or all there are after `timeout`: a
    /// batch exporter sends spans a while after their work.
    pub(crate) async fn when(
        &self,
        timeout: Duration,
        enough: impl Fn(&[Got]) -> bool,
    ) -> Vec<Got> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.all();
            if enough(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps the spans of an export request, each with its resource's `service.name`.
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().expect("received spans");
        for rs in request.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"));
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
}

/// A listener on a free port of 127.0.0.1, and its address.
async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the OTLP receiver");
    let addr = listener.local_addr().expect("receiver address");
    (listener, addr)
}

/// Runs a receiver's server until the test ends, saying so if it stops before.
fn serve<E: std::fmt::Display>(server: impl Future<Output = Result<(), E>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = server.await {
            eprintln!("OTLP receiver stopped: {e}");
        }
    });
}

/// An export request of metrics as received, with its `x-api-key` metadata.
pub(crate) type MetricsRequest = (ExportMetricsServiceRequest, Option<String>);

/// An OTLP/gRPC receiver, as a collector serves it: traces and metrics on one port. Keeps
/// every span and every metrics export sent to it.
#[derive(Clone, Default)]
pub(crate) struct GrpcReceiver {
    spans: Spans,
    metrics: Arc<Mutex<Vec<MetricsRequest>>>,
}

impl GrpcReceiver {
    /// Starts receiving until the test ends; returns the address to export to.
    pub(crate) async fn start(&self) -> SocketAddr {
        let (listener, addr) = listen().await;
        let routes = tonic::service::Routes::new(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()));
        serve(
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        addr
    }

    /// The spans received.
    pub(crate) fn spans(&self) -> &Spans {
        &self.spans
    }

    /// Every metrics export received so far, with its `x-api-key`.
    pub(crate) fn metrics(&self) -> Vec<MetricsRequest> {
        self.metrics.lock().expect("received metrics").clone()
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.spans.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let key = request
            .metadata()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.metrics
            .lock()
            .expect("received metrics")
            .push((request.into_inner(), key));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A trace receiver over OTLP/HTTP with protobuf bodies: answers `POST /v1/traces` as a
/// collector does, and notes the content types of the exports and requests to other paths.
#[derive(Clone, Default)]
pub(crate) struct HttpTraceReceiver {
    spans: Spans,
    content_types: Arc<Mutex<Vec<String>>>,
    strays: Arc<Mutex<Vec<String>>>,
}

impl HttpTraceReceiver {
    /// Starts receiving until the test ends; returns the address to export to.
    pub(crate) async fn start(&self) -> SocketAddr {
        let (listener, addr) = listen().await;
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(Self::export))
            .fallback(Self::stray)
            .with_state(self.clone());
        serve(axum::serve(listener, router).into_future());
        addr
    }

    /// The spans received.
    pub(crate) fn spans(&self) -> &Spans {
        &self.spans
    }

    /// The content types of the export requests.
    pub(crate) fn content_types(&self) -> Vec<String> {
        self.content_types.lock().expect("content types").clone()
    }

    /// The paths of requests to anything but `/v1/traces`.
    pub(crate) fn strays(&self) -> Vec<String> {
        self.strays.lock().expect("strays").clone()
    }

    async fn export(
        State(receiver): State<HttpTraceReceiver>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        receiver
            .content_types
            .lock()
            .expect("content types")
            .push(content_type);
        let request = match ExportTraceServiceRequest::decode(body) {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        receiver.spans.add(request);
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response()
    }

    async fn stray(State(receiver): State<HttpTraceReceiver>, uri: Uri) -> StatusCode {
        receiver
            .strays
            .lock()
            .expect("strays")
            .push(uri.to_string());
        StatusCode::NOT_FOUND
    }
}

// ---------------------------------------------------------------------------------------------
// Reading spans

/// Bytes (a trace or span id) as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex (a trace or span id) as bytes.
pub(crate) fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The value of a string attribute (`None` when missing or of another type).
pub(crate) fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The value of an integer attribute (`None` when missing or of another type).
pub(crate) fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// A span's kind.
pub(crate) fn kind(s: &Span) -> SpanKind {
    SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified)
}

/// A span on one line, for failure messages: name, kind, ids and attributes.
pub(crate) fn describe(s: &Span) -> String {
    let attrs: Vec<String> = s
        .attributes
        .iter()
        .map(|kv| {
            format!(
                "{}={:?}",
                kv.key,
                kv.value.as_ref().and_then(|v| v.value.as_ref())
            )
        })
        .collect();
    format!(
        "{:?} kind={:?} trace={} span={} parent={} [{}]",
        s.name,
        kind(s),
        hex(&s.trace_id),
        hex(&s.span_id),
        hex(&s.parent_span_id),
        attrs.join(", ")
    )
}

/// Every span received, one a line, for failure messages.
pub(crate) fn dump(spans: &[Got]) -> String {
    spans
        .iter()
        .map(|g| describe(&g.span))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// The spans named `name`.
pub(crate) fn named<'a>(spans: &'a [Got], name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|g| g.span.name == name)
        .map(|g| &g.span)
        .collect()
}

/// Checks the `process` span of a record an agent handled: a consumer span with the messaging
/// attributes of `system`, the record's `topic`, the agent's consumer `group`, and the agent.
/// (The record's partition and offset are the test's to check: it knows them.)
pub(crate) fn check_process_span(span: &Span, system: &str, topic: &str, group: &str, agent: &str) {
    let what = describe(span);
    assert_eq!(kind(span), SpanKind::Consumer, "{what}");
    for (key, want) in [
        ("messaging.system", system),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", topic),
        ("messaging.consumer.group.name", group),
        ("rill.agent", agent),
    ] {
        assert_eq!(
            string_attr(&span.attributes, key).as_deref(),
            Some(want),
            "{key} of {what}"
        );
    }
}

/// Checks that every span received names `service` as its resource's `service.name`.
pub(crate) fn check_service(spans: &[Got], service: &str) {
    for g in spans {
        assert_eq!(
            g.service.as_deref(),
            Some(service),
            "service.name of {}",
            describe(&g.span)
        );
    }
}
