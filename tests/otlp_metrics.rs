//! Metrics pushed over OTLP/gRPC to a receiver speaking the real protocol (opentelemetry-proto's
//! tonic service): rill's counters and histograms and the app's own metrics arrive, with the
//! service name, at shutdown at the latest.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use rill::metrics::prometheus_client::metrics::counter::Counter;
use rill::prelude::*;
use rill::telemetry::{OtlpProtocol, TelemetryConfig};

/// Requests received, with their `x-api-key` metadata.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

type Received = (ExportMetricsServiceRequest, Option<String>);

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let key = request
            .metadata()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0
            .lock()
            .expect("lock")
            .push((request.into_inner(), key));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

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
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = MetricsServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener))
            .await
            .expect("receiver");
    });

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.stats("tick_counter").map_or(0, |s| {
        s.records_in.load(std::sync::atomic::Ordering::Relaxed)
    }) < 25
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "records not processed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Shutdown pushes once more.
    app.stop().await?;

    let requests = receiver.0.lock().expect("lock").clone();
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

/// The listener as the stream of connections tonic serves.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    })
}
