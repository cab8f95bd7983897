//! OpenTelemetry trace export over OTLP/HTTP with protobuf bodies, against a real receiver: an
//! axum server answering `POST /v1/traces` as a collector does. One agent on the embedded log;
//! its per-record `process` spans arrive with their messaging attributes.
//!
//! One test in this binary: `telemetry::init` installs the process-wide subscriber.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::otlp::{
    self, HttpTraceReceiver, check_process_span, describe, dump, hex, int_attr, named, string_attr,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use rill::prelude::*;
use rill::telemetry::OtlpProtocol;
use rill::{Headers, OutRecord};

const SERVICE: &str = "rill-telemetry-http-test";
const APP: &str = "telhttp";
const TOPIC: &str = "clicks";
const CLICKS: usize = 5;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

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
    let receiver = HttpTraceReceiver::default();
    let addr = receiver.start().await;
    let telemetry = otlp::export_to(addr, OtlpProtocol::HttpProtobuf, SERVICE, APP);

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
    app.wait_until(&format!("the agent handled {CLICKS} clicks"), |_| {
        HANDLED.lock().expect("handled").len() >= CLICKS
    })
    .await
    .expect("the clicks handled");
    app.stop().await.expect("stop the app");
    otlp::flush(telemetry).await;

    let name = format!("{TOPIC} process");
    let spans = receiver
        .spans()
        .when(Duration::from_secs(15), |spans| {
            named(spans, &name).len() >= CLICKS
        })
        .await;
    let all = || dump(&spans);

    let types = receiver.content_types();
    assert!(!types.is_empty(), "no export request reached /v1/traces");
    assert!(
        types.iter().all(|t| t == "application/x-protobuf"),
        "export requests' content types: {types:?}"
    );
    let strays = receiver.strays();
    assert!(strays.is_empty(), "requests to other paths: {strays:?}");
    otlp::check_service(&spans, SERVICE);

    let process: Vec<&Span> = named(&spans, &name);
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
        check_process_span(
            s,
            "rill",
            TOPIC,
            &format!("{APP}-count_clicks"),
            "count_clicks",
        );
        let a = &s.attributes;
        let what = describe(s);
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
