//! OpenTelemetry trace export over OTLP/HTTP with protobuf bodies, against a real receiver: an
//! axum server answering `POST /v1/traces` as a collector does. One agent on the embedded log;
//! its per-record `process` spans arrive with their messaging attributes.
//!
//! One test in this binary: `telemetry::init` installs the process-wide subscriber.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use rill::prelude::*;
use rill::telemetry::{OtlpProtocol, TelemetryConfig};
use rill::{Headers, OutRecord};

const SERVICE: &str = "rill-telemetry-http-test";
const APP: &str = "telhttp";
const TOPIC: &str = "clicks";
const CLICKS: usize = 5;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

// ---------------------------------------------------------------------------------------------
// The OTLP/HTTP receiver

/// Spans with the `service.name` of their resource.
type Received = Vec<(Option<String>, Span)>;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Received>>,
    /// Content types of the export requests.
    content_types: Arc<Mutex<Vec<String>>>,
    /// Requests to any other path than `/v1/traces`.
    strays: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn spans(&self) -> Received {
        self.spans.lock().expect("received spans").clone()
    }
}

async fn export(
    State(receiver): State<Receiver>,
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
    {
        let mut spans = receiver.spans.lock().expect("received spans");
        for rs in request.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"));
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

async fn stray(State(receiver): State<Receiver>, uri: Uri) -> StatusCode {
    receiver
        .strays
        .lock()
        .expect("strays")
        .push(uri.to_string());
    StatusCode::NOT_FOUND
}

async fn start_receiver(receiver: Receiver) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the OTLP receiver");
    let addr = listener.local_addr().expect("receiver address");
    let router = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .fallback(stray)
        .with_state(receiver);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("OTLP receiver stopped: {e}");
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Reading spans

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn describe(s: &Span) -> String {
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
        "{:?} kind={} trace={} span={} parent={} [{}]",
        s.name,
        s.kind,
        hex(&s.trace_id),
        hex(&s.span_id),
        hex(&s.parent_span_id),
        attrs.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// The app

#[record]
#[derive(Debug, Clone)]
struct Click {
    #[record(key)]
    user: String,
    url: String,
}

/// (user, partition, offset) of every click the agent handled.
static HANDLED: Mutex<Vec<(String, i32, i64)>> = Mutex::new(Vec::new());

#[agent(topic = "clicks")]
async fn count_clicks(clicks: Stream<Click>) -> rill::Result<()> {
    let mut clicks = clicks.events();
    while let Some(c) = clicks.next().await {
        HANDLED
            .lock()
            .expect("handled")
            .push((c.user.clone(), c.meta.partition, c.meta.offset));
    }
    Ok(())
}

fn click(i: usize, traceparent: Option<&str>) -> OutRecord {
    let value = Click {
        user: format!("user-{i}"),
        url: format!("/page/{i}"),
    };
    let mut headers = Headers::default();
    if let Some(tp) = traceparent {
        headers.insert("traceparent", tp.as_bytes().to_vec());
    }
    OutRecord {
        topic: Arc::from(TOPIC),
        partition: None,
        key: Some(value.user.as_bytes().to_vec()),
        value: Some(serde_json::to_vec(&value).expect("encode click")),
        timestamp: 1_700_000_000_000,
        headers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn process_spans_reach_an_otlp_http_protobuf_receiver() {
    let receiver = Receiver::default();
    let addr = start_receiver(receiver.clone()).await;
    let telemetry = rill::telemetry::init(
        &TelemetryConfig {
            // No path: rill appends `/v1/traces`.
            endpoint: Some(format!("http://{addr}")),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            service_name: Some(SERVICE.into()),
            headers: Vec::new(),
        },
        APP,
        "warn",
    )
    .expect("telemetry init")
    .expect("an exporter for the explicit endpoint");

    let app = App::new(APP)
        .agents([count_clicks::agent()])
        .test()
        .await
        .expect("start the app");
    // The first click continues a trace started elsewhere; the others start their own.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    for i in 0..CLICKS {
        let tp = (i == 0).then_some(traceparent.as_str());
        app.producer()
            .send_raw(click(i, tp))
            .await
            .expect("send a click");
    }
    app.producer().flush().await.expect("flush");
    let deadline = Instant::now() + Duration::from_secs(30);
    while HANDLED.lock().expect("handled").len() < CLICKS {
        assert!(
            Instant::now() < deadline,
            "the agent did not handle {CLICKS} clicks within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await.expect("stop the app");
    // Dropping the handle flushes the batch exporter (a blocking call).
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flush the exporter");

    let name = format!("{TOPIC} process");
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = receiver.spans();
        let n = spans.iter().filter(|(_, s)| s.name == name).count();
        if n >= CLICKS || Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = || {
        spans
            .iter()
            .map(|(_, s)| describe(s))
            .collect::<Vec<_>>()
            .join("\n  ")
    };

    let types = receiver
        .content_types
        .lock()
        .expect("content types")
        .clone();
    assert!(!types.is_empty(), "no export request reached /v1/traces");
    assert!(
        types.iter().all(|t| t == "application/x-protobuf"),
        "export requests' content types: {types:?}"
    );
    let strays = receiver.strays.lock().expect("strays").clone();
    assert!(strays.is_empty(), "requests to other paths: {strays:?}");
    for (service, s) in &spans {
        assert_eq!(
            service.as_deref(),
            Some(SERVICE),
            "service.name of {}",
            describe(s)
        );
    }

    let process: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(
        process.len(),
        CLICKS,
        "one `{name}` span per click; received:\n  {}",
        all()
    );
    let handled = HANDLED.lock().expect("handled").clone();
    let expected: BTreeSet<(String, i64)> = handled
        .iter()
        .map(|(_, p, o)| (p.to_string(), *o))
        .collect();
    let mut got = BTreeSet::new();
    for s in &process {
        let a = &s.attributes;
        let what = describe(s);
        assert_eq!(s.kind, SpanKind::Consumer as i32, "{what}");
        assert_eq!(
            string_attr(a, "messaging.system").as_deref(),
            Some("rill"),
            "{what}"
        );
        assert_eq!(
            string_attr(a, "messaging.operation.type").as_deref(),
            Some("process"),
            "{what}"
        );
        assert_eq!(
            string_attr(a, "messaging.destination.name").as_deref(),
            Some(TOPIC),
            "{what}"
        );
        assert_eq!(
            string_attr(a, "messaging.consumer.group.name"),
            Some(format!("{APP}-count_clicks")),
            "{what}"
        );
        assert_eq!(
            string_attr(a, "rill.agent").as_deref(),
            Some("count_clicks"),
            "{what}"
        );
        let partition = string_attr(a, "messaging.destination.partition.id")
            .unwrap_or_else(|| panic!("partition id: {what}"));
        let offset = int_attr(a, "rill.offset").unwrap_or_else(|| panic!("offset: {what}"));
        got.insert((partition, offset));
    }
    assert_eq!(
        got, expected,
        "the spans' (partition, offset) are those of the handled records"
    );

    // The click with `traceparent` continues that trace; the others are roots of their own.
    let traced: Vec<&&Span> = process
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    assert_eq!(
        traced.len(),
        1,
        "one span in the external trace:\n  {}",
        all()
    );
    assert_eq!(hex(&traced[0].parent_span_id), PARENT_ID);
    let roots: BTreeSet<Vec<u8>> = process
        .iter()
        .filter(|s| hex(&s.trace_id) != TRACE_ID)
        .inspect(|s| {
            assert!(
                s.parent_span_id.is_empty(),
                "a click without traceparent starts a trace: {}",
                describe(s)
            );
        })
        .map(|s| s.trace_id.clone())
        .collect();
    assert_eq!(roots.len(), CLICKS - 1, "one trace per untraced click");
}
