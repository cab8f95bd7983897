//! OpenTelemetry trace export against a real OTLP/gRPC receiver (a tonic server speaking the
//! collector protocol of `opentelemetry-proto`): per-record `process` spans with the messaging
//! attributes, `publish` spans whose context travels in the sent record's `traceparent`, a
//! trace started by a producer outside rill continuing through two agents connected by a topic,
//! `tracing` spans of an agent nested under the record's span, and `rill.commit` /
//! `rill.rebalance` spans. On the memory transport always, on Kafka when `RILL_TEST_KAFKA` is
//! set.
//!
//! One test in this binary: `telemetry::init` installs the process-wide subscriber.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::otlp::{
    self, Got, GrpcReceiver, check_process_span, decode_hex, describe, dump, hex, int_attr, kind,
    named, string_attr,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use rill::prelude::*;
use rill::telemetry::OtlpProtocol;
use rill::{AgentSpec, Headers, OutRecord, TopicSpec};

const SERVICE: &str = "rill-telemetry-test";

// ---------------------------------------------------------------------------------------------
// Reading spans

/// The single span named `name` in trace `trace` whose parent is `parent`.
fn child<'a>(spans: &'a [Got], name: &str, trace: &[u8], parent: &[u8]) -> &'a Span {
    let found: Vec<&Span> = named(spans, name)
        .into_iter()
        .filter(|s| s.trace_id == trace && s.parent_span_id == parent)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one `{name}` span in trace {} with parent {}; received:\n  {}",
        hex(trace),
        hex(parent),
        dump(spans)
    );
    found[0]
}

// ---------------------------------------------------------------------------------------------
// The app: `ship` reads orders, checks stock inside a `tracing` span and sends each order on to
// the shipments topic; `deliver` reads shipments.

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Order {
    #[record(key)]
    id: String,
    item: String,
    qty: u32,
}

/// What an agent saw of a record: order id, partition, offset, headers.
type Seen = Arc<Mutex<Vec<(String, i32, i64, Headers)>>>;

fn stock_level(item: &str) -> u32 {
    // Some synchronous work for the `check_stock` span to cover.
    item.bytes().map(u32::from).sum::<u32>() % 100 + 10
}

struct Names {
    app: String,
    orders: String,
    shipments: String,
    ship: String,
    deliver: String,
}

fn agents(n: &Names, shipped: Seen, delivered: Seen) -> [AgentSpec; 2] {
    let ship = AgentSpec::new(&n.ship, concat!(file!(), ":", line!()))
        .source(TopicSpec::of::<Order>(&n.orders, file!()))
        .sink(TopicSpec::of::<Order>(&n.shipments, file!()))
        .run(move |mut ctx| {
            let shipped = shipped.clone();
            async move {
                let mut orders = ctx.stream::<Order>()?.events();
                let out = ctx.sink::<Order>()?;
                while let Some(order) = orders.next().await {
                    let in_stock = {
                        let _span = tracing::info_span!("check_stock", order = %order.id).entered();
                        stock_level(&order.item) >= order.qty
                    };
                    if in_stock {
                        out.send(&order.value).await?;
                    }
                    shipped.lock().expect("shipped").push((
                        order.id.clone(),
                        order.meta.partition,
                        order.meta.offset,
                        order.meta.headers.clone(),
                    ));
                }
                Ok(())
            }
        });
    let deliver = AgentSpec::new(&n.deliver, concat!(file!(), ":", line!()))
        .source(TopicSpec::of::<Order>(&n.shipments, file!()))
        .run(move |mut ctx| {
            let delivered = delivered.clone();
            async move {
                let mut shipments = ctx.stream::<Order>()?.events();
                while let Some(s) = shipments.next().await {
                    delivered.lock().expect("delivered").push((
                        s.id.clone(),
                        s.meta.partition,
                        s.meta.offset,
                        s.meta.headers.clone(),
                    ));
                }
                Ok(())
            }
        });
    [ship, deliver]
}

/// An order for partition 0: both orders of a run go there, so they reach `ship` in one batch
/// and the second is handed out in the same poll that finishes the first (its spans must still
/// nest under its own record's span).
fn record(topic: &str, order: &Order, traceparent: Option<&str>) -> OutRecord {
    let mut headers = Headers::default();
    if let Some(tp) = traceparent {
        headers.insert("traceparent", tp.as_bytes().to_vec());
    }
    OutRecord {
        topic: Arc::from(topic),
        partition: Some(0),
        key: Some(order.id.as_bytes().to_vec()),
        value: Some(serde_json::to_vec(order).expect("encode order")),
        timestamp: common::records::now_ms(),
        headers,
    }
}

/// One run of the two agents: the names, the external trace, and what the agents saw.
struct Run {
    names: Names,
    system: &'static str,
    trace_id: &'static str,
    parent_id: &'static str,
    shipped: Seen,
    delivered: Seen,
}

/// Starts the app on `broker`, sends one order carrying a `traceparent` and one without, waits
/// until `deliver` got both, and stops the worker.
async fn run(names: Names, broker: &str, trace_id: &'static str, parent_id: &'static str) -> Run {
    let shipped = Seen::default();
    let delivered = Seen::default();
    let system = if broker.starts_with("kafka://") {
        "kafka"
    } else {
        "rill"
    };
    let worker = App::new(&names.app)
        .agents(agents(&names, shipped.clone(), delivered.clone()))
        .broker(broker)
        .partitions(2)
        // Long enough that no commit falls between the two orders of one batch.
        .commit_interval(Duration::from_secs(1))
        .kafka_property("log_level", "3")
        .start()
        .await
        .expect("start the worker");
    let producer = worker.producer();
    let traced = Order {
        id: "traced".into(),
        item: "books".into(),
        qty: 1,
    };
    let untraced = Order {
        id: "untraced".into(),
        item: "lamps".into(),
        qty: 2,
    };
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    producer
        .send_raw(record(&names.orders, &traced, Some(&traceparent)))
        .await
        .expect("send the traced order");
    producer
        .send_raw(record(&names.orders, &untraced, None))
        .await
        .expect("send the untraced order");
    producer.flush().await.expect("flush");

    let deadline = Instant::now() + Duration::from_secs(90);
    while delivered.lock().expect("delivered").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "`{}` did not receive both orders within 90 s (shipped: {:?})",
            names.deliver,
            shipped.lock().expect("shipped")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await.expect("stop the worker");
    Run {
        names,
        system,
        trace_id,
        parent_id,
        shipped,
        delivered,
    }
}

/// Whether every span the checks of `run` look for has arrived.
fn complete(spans: &[Got], run: &Run) -> bool {
    let n = &run.names;
    let count = |name: &str| named(spans, name).len();
    count(&format!("{} process", n.orders)) >= 2
        && count(&format!("{} publish", n.shipments)) >= 2
        && count(&format!("{} process", n.shipments)) >= 2
        && named(spans, "check_stock")
            .iter()
            .filter(|s| {
                let ours = |name: &str| named(spans, name).iter().any(|p| p.trace_id == s.trace_id);
                ours(&format!("{} process", n.orders))
            })
            .count()
            >= 2
        && [&n.ship, &n.deliver]
            .iter()
            .all(|agent| agent_spans(spans, "rill.commit", agent) > 0)
}

fn agent_spans(spans: &[Got], name: &str, agent: &str) -> usize {
    named(spans, name)
        .iter()
        .filter(|s| string_attr(&s.attributes, "agent").as_deref() == Some(agent))
        .count()
}

fn seen_of(seen: &Seen, id: &str) -> (i32, i64, Headers) {
    let seen = seen.lock().expect("seen");
    let found: Vec<_> = seen.iter().filter(|(i, ..)| i == id).collect();
    assert_eq!(found.len(), 1, "`{id}` seen once: {seen:?}");
    let (_, p, o, h) = found[0];
    (*p, *o, h.clone())
}

/// Checks the consumer span of a record an agent processed.
fn check_process(span: &Span, run: &Run, topic: &str, agent: &str, seen: (i32, i64)) {
    let group = format!("{}-{agent}", run.names.app);
    check_process_span(span, run.system, topic, &group, agent);
    let a = &span.attributes;
    let what = describe(span);
    assert_eq!(
        string_attr(a, "messaging.destination.partition.id"),
        Some(seen.0.to_string()),
        "{what}"
    );
    // The offset: Kafka's attribute on Kafka, rill's own on the embedded log.
    let offset_attr = if run.system == "kafka" {
        "messaging.kafka.offset"
    } else {
        "rill.offset"
    };
    assert_eq!(int_attr(a, offset_attr), Some(seen.1), "{what}");
}

/// Checks the producer span of a send to the shipments topic, and that its context is what the
/// sent record carried.
fn check_publish(span: &Span, run: &Run, delivered_headers: &Headers) {
    let what = describe(span);
    assert_eq!(kind(span), SpanKind::Producer, "{what}");
    let a = &span.attributes;
    assert_eq!(
        string_attr(a, "messaging.system").as_deref(),
        Some(run.system),
        "{what}"
    );
    assert_eq!(
        string_attr(a, "messaging.destination.name").as_deref(),
        Some(run.names.shipments.as_str()),
        "{what}"
    );
    let traceparent = delivered_headers
        .get("traceparent")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(
        traceparent,
        Some(format!(
            "00-{}-{}-01",
            hex(&span.trace_id),
            hex(&span.span_id)
        )),
        "the shipment carries the publish span's context ({what})"
    );
}

/// The chain of one order through both agents; returns A's process span.
fn check_chain<'a>(
    spans: &'a [Got],
    run: &Run,
    order: &str,
    trace: &[u8],
    parent: &[u8],
) -> &'a Span {
    let n = &run.names;
    let (a_part, a_off, _) = seen_of(&run.shipped, order);
    let (b_part, b_off, b_headers) = seen_of(&run.delivered, order);
    let a_process = child(spans, &format!("{} process", n.orders), trace, parent);
    check_process(a_process, run, &n.orders, &n.ship, (a_part, a_off));

    let publish = child(
        spans,
        &format!("{} publish", n.shipments),
        trace,
        &a_process.span_id,
    );
    check_publish(publish, run, &b_headers);

    let b_process = child(
        spans,
        &format!("{} process", n.shipments),
        trace,
        &publish.span_id,
    );
    check_process(b_process, run, &n.shipments, &n.deliver, (b_part, b_off));

    let stock = child(spans, "check_stock", trace, &a_process.span_id);
    assert_eq!(kind(stock), SpanKind::Internal, "{}", describe(stock));
    assert_eq!(
        string_attr(&stock.attributes, "order").as_deref(),
        Some(order),
        "{}",
        describe(stock)
    );
    a_process
}

fn check(spans: &[Got], run: &Run) {
    let n = &run.names;
    let trace = decode_hex(run.trace_id);
    let parent = decode_hex(run.parent_id);

    // The trace started outside rill continues through both agents.
    check_chain(spans, run, "traced", &trace, &parent);

    // The order without `traceparent` starts a trace of its own, rooted at A's process span.
    let roots: Vec<&Span> = named(spans, &format!("{} process", n.orders))
        .into_iter()
        .filter(|s| s.trace_id != trace)
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "one `{} process` span outside the external trace; received:\n  {}",
        n.orders,
        dump(spans)
    );
    let own = roots[0].trace_id.clone();
    assert!(
        roots[0].parent_span_id.is_empty(),
        "the untraced order's span is a root: {}",
        describe(roots[0])
    );
    check_chain(spans, run, "untraced", &own, &[]);

    for agent in [&n.ship, &n.deliver] {
        assert!(
            agent_spans(spans, "rill.commit", agent) > 0,
            "`rill.commit` spans of `{agent}`; received:\n  {}",
            dump(spans)
        );
        assert!(
            agent_spans(spans, "rill.rebalance", agent) > 0,
            "`rill.rebalance` spans of `{agent}`; received:\n  {}",
            dump(spans)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_reach_an_otlp_grpc_receiver_and_a_trace_continues_through_two_agents() {
    // First, so that RILL_REQUIRE_KAFKA=1 without a broker fails at once.
    let kafka = common::kafka_bootstrap();
    let receiver = GrpcReceiver::default();
    let addr = receiver.start().await;
    let telemetry = otlp::export_to(addr, OtlpProtocol::Grpc, SERVICE, "tel");

    let mut runs = vec![
        run(
            Names {
                app: "tel".into(),
                orders: "orders".into(),
                shipments: "shipments".into(),
                ship: "ship".into(),
                deliver: "deliver".into(),
            },
            "memory://",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        )
        .await,
    ];
    if let Some(bootstrap) = kafka {
        let suffix = format!("{:08x}", rand::random::<u32>());
        runs.push(
            run(
                Names {
                    app: format!("telk-{suffix}"),
                    orders: format!("tel_orders_{suffix}"),
                    shipments: format!("tel_shipments_{suffix}"),
                    ship: "ship_kafka".into(),
                    deliver: "deliver_kafka".into(),
                },
                &format!("kafka://{bootstrap}"),
                "0af7651916cd43dd8448eb211c80319c",
                "b7ad6b7169203331",
            )
            .await,
        );
    }

    otlp::flush(telemetry).await;

    let spans = receiver
        .spans()
        .when(Duration::from_secs(15), |spans| {
            runs.iter().all(|r| complete(spans, r))
        })
        .await;
    assert!(!spans.is_empty(), "no span reached the OTLP receiver");
    otlp::check_service(&spans, SERVICE);
    for r in &runs {
        check(&spans, r);
    }
}
