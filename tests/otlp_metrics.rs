//! Metrics pushed over OTLP/gRPC to a receiver speaking the real protocol (opentelemetry-proto's
//! tonic service): rill's counters and histograms and the app's own metrics arrive, with the
//! service name, at shutdown at the latest.

mod common;

use common::otlp::GrpcReceiver;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use rill::metrics::prometheus_client::metrics::counter::Counter;
use rill::prelude::*;
use rill::telemetry::{OtlpProtocol, TelemetryConfig};

#[record]
#[derive(Debug, Clone)]
struct Tick {
    n: u64,
}

#[agent(topic = "ticks")]
async fn tick_counter(mut ticks: Stream<Tick>) -> rill::Result<()> {
    while let Some(t) = ticks.next().await {
        tracing::debug!(n = t.n, "tick");
    }
    Ok(())
}

fn sum_value(m: &Metric) -> Option<f64> {
    match &m.data {
        Some(metric::Data::Sum(s)) => s.data_points.iter().find_map(|p| match p.value {
            Some(number_data_point::Value::AsDouble(v)) => Some(v),
            Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
            None => None,
        }),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_at_an_otlp_grpc_receiver() -> rill::Result<()> {
    let receiver = GrpcReceiver::default();
    let addr = receiver.start().await;

    let orders: Counter = Counter::default();
    orders.inc_by(42);
    let app = App::new("otlp_metrics_test")
        .memory()
        .agents([tick_counter::agent()])
        .metrics(|r| r.register("shop_orders", "Orders seen", orders.clone()))
        .configure(|c| {
            c.telemetry = TelemetryConfig {
                endpoint: Some(format!("http://{addr}")),
                protocol: Some(OtlpProtocol::Grpc),
                service_name: Some("otlp-metrics-test".into()),
                headers: vec![("x-api-key".into(), "k1".into())],
            }
        })
        .test()
        .await?;
    for n in 0..25 {
        app.send_to("ticks", &Tick { n }).await?;
    }
    app.wait_until("records processed", |app| {
        app.stat("tick_counter", |s| &s.records_in) >= 25
    })
    .await?;
    // Shutdown pushes once more.
    app.stop().await?;

    let requests = receiver.metrics();
    let (last, key) = requests.last().expect("at least the shutdown push arrived");
    assert_eq!(key.as_deref(), Some("k1"), "the configured header is sent");
    let resource = last.resource_metrics[0].resource.clone().expect("resource");
    assert!(
        resource.attributes.iter().any(|kv| kv.key == "service.name"
            && format!("{:?}", kv.value).contains("otlp-metrics-test")),
        "{resource:?}"
    );
    let metrics: Vec<Metric> = last
        .resource_metrics
        .iter()
        .flat_map(|r| r.scope_metrics.iter())
        .flat_map(|s| s.metrics.iter().cloned())
        .collect();
    let find = |name: &str| {
        metrics.iter().find(|m| m.name == name).unwrap_or_else(|| {
            panic!(
                "no `{name}` in {:?}",
                metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(sum_value(find("rill_records_in")), Some(25.0));
    assert_eq!(sum_value(find("shop_orders")), Some(42.0));
    match &find("rill_processing_seconds").data {
        Some(metric::Data::Histogram(h)) => {
            assert_eq!(h.data_points[0].count, 25);
            assert_eq!(
                h.data_points[0].bucket_counts.iter().sum::<u64>(),
                25,
                "buckets add up to the count"
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }
    Ok(())
}
