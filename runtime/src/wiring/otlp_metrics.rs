//! Metrics over OTLP: with an OTLP endpoint configured (as for traces, see `telemetry`), the
//! worker pushes everything `/metrics` serves (rill's metrics and the app's own) to it every
//! `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 000), and once more at shutdown.
//! `OTEL_METRICS_EXPORTER=none` turns this off while keeping trace export.
//!
//! The registry's Prometheus text is the single source: it is parsed and turned into OTLP
//! (counters into cumulative monotonic sums named without `_total`, gauges into gauges,
//! histograms into explicit-bucket histograms), so user metrics need no second registration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::base::telemetry::{OtlpProtocol, TelemetryConfig};
use crate::wiring::web::api::WebBackend;

type Labels = Vec<(String, String)>;

/// A histogram series: buckets (bound, cumulative count), sum, count.
type Series = (Vec<(f64, f64)>, f64, f64);

/// One family of the Prometheus text.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    /// Counter and gauge samples.
    values: Vec<(Labels, f64)>,
    /// Histogram series by their labels (without `le`): buckets (bound, cumulative), sum, count.
    histograms: BTreeMap<Labels, Series>,
}

/// Parses the Prometheus text format (0.0.4) as `prometheus-client` writes it.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                families.entry(name.to_owned()).or_default().kind = kind.trim().to_owned();
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                families.entry(name.to_owned()).or_default().help = help.trim().to_owned();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, labels, value)) = sample(line) else {
            continue;
        };
        if let Some(f) = families.get_mut(series) {
            f.values.push((labels, value));
            continue;
        }
        for (suffix, part) in [("_bucket", 0), ("_sum", 1), ("_count", 2)] {
            let Some(base) = series.strip_suffix(suffix) else {
                continue;
            };
            let Some(f) = families.get_mut(base).filter(|f| f.kind == "histogram") else {
                continue;
            };
            let mut labels = labels;
            let le = labels
                .iter()
                .position(|(k, _)| k == "le")
                .map(|i| labels.remove(i).1);
            let entry = f.histograms.entry(labels).or_default();
            match part {
                0 => {
                    let bound = match le.as_deref() {
                        Some("+Inf") | None => f64::INFINITY,
                        Some(b) => b.parse().unwrap_or(f64::INFINITY),
                    };
                    entry.0.push((bound, value));
                }
                1 => entry.1 = value,
                _ => entry.2 = value,
            }
            break;
        }
    }
    families
}

/// `name{k="v",...} value` → (name, labels, value).
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(other) => v.push(other),
                    None => return None,
                },
                '"' => break,
                c => v.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), v));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.clone())),
            }),
            ..Default::default()
        })
        .collect()
}

/// The OTLP metrics of a Prometheus text.
fn to_otlp(text: &str, start_ns: u64, now_ns: u64) -> Vec<Metric> {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let point = |labels: &Labels, v: f64| NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    parse(text)
        .into_iter()
        .filter_map(|(name, f)| {
            let data = match f.kind.as_str() {
                "counter" => metric::Data::Sum(Sum {
                    data_points: f.values.iter().map(|(l, v)| point(l, *v)).collect(),
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
                "gauge" | "unknown" | "untyped" => metric::Data::Gauge(Gauge {
                    data_points: f.values.iter().map(|(l, v)| point(l, *v)).collect(),
                }),
                "histogram" => metric::Data::Histogram(Histogram {
                    data_points: f
                        .histograms
                        .iter()
                        .map(|(labels, (buckets, sum, count))| {
                            let mut buckets = buckets.clone();
                            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                            let mut previous = 0.0;
                            let mut counts = Vec::new();
                            let mut bounds = Vec::new();
                            for (bound, cumulative) in &buckets {
                                counts.push((cumulative - previous).max(0.0) as u64);
                                previous = *cumulative;
                                if bound.is_finite() {
                                    bounds.push(*bound);
                                }
                            }
                            if bounds.len() == counts.len() {
                                counts.push((count - previous).max(0.0) as u64);
                            }
                            HistogramDataPoint {
                                attributes: attributes(labels),
                                start_time_unix_nano: start_ns,
                                time_unix_nano: now_ns,
                                count: *count as u64,
                                sum: Some(*sum),
                                bucket_counts: counts,
                                explicit_bounds: bounds,
                                ..Default::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: cumulative,
                }),
                _ => return None,
            };
            let name = match f.kind.as_str() {
                "counter" => name.strip_suffix("_total").unwrap_or(&name).to_owned(),
                _ => name,
            };
            Some(Metric {
                name,
                description: f.help,
                data: Some(data),
                ..Default::default()
            })
        })
        .collect()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where and how metrics go.
#[derive(Debug, Clone)]
struct Target {
    protocol: OtlpProtocol,
    url: String,
    /// `OTEL_EXPORTER_OTLP_METRICS_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS` (e.g. an API key).
    headers: Vec<(String, String)>,
    timeout: Duration,
}

/// The first of these variables that is set.
fn first_env(names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|n| env(n).map(|v| (*n, v)))
}

/// `key1=value1,key2=value2`, values percent-decoded (the OTLP exporter specification).
fn parse_headers(var: &str, text: &str) -> crate::base::error::Result<Vec<(String, String)>> {
    text.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                crate::base::error::Error::config(
                    var,
                    "expected `key=value` pairs separated by commas",
                )
            })?;
            Ok((k.trim().to_ascii_lowercase(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where metrics go: `None` when no endpoint is configured or metrics export is off.
fn target(config: &TelemetryConfig) -> crate::base::error::Result<Option<Target>> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_METRICS_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let protocol = match config.protocol {
        Some(p) => p,
        None => match first_env(&[
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]) {
            None => OtlpProtocol::Grpc,
            Some((_, p)) if p == "grpc" => OtlpProtocol::Grpc,
            Some((_, p)) if p == "http/protobuf" => OtlpProtocol::HttpProtobuf,
            Some((var, other)) => {
                return Err(crate::base::error::Error::config(
                    var,
                    format!("`{other}` is not supported; use `grpc` or `http/protobuf`"),
                ));
            }
        },
    };
    let http = protocol == OtlpProtocol::HttpProtobuf;
    let with_path = |base: &str| {
        if http {
            format!("{}/v1/metrics", base.trim_end_matches('/'))
        } else {
            base.to_owned()
        }
    };
    let url = match (&config.endpoint, env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) {
        (Some(base), _) => with_path(base),
        (None, Some(exact)) => exact,
        (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(base) => with_path(&base),
            None => return Ok(None),
        },
    };
    let headers = match first_env(&[
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ]) {
        _ if !config.headers.is_empty() => config
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        Some((var, text)) => parse_headers(var, &text)?,
        None => Vec::new(),
    };
    let timeout = first_env(&[
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ])
    .and_then(|(_, ms)| ms.trim().parse::<u64>().ok())
    .map_or(Duration::from_secs(10), Duration::from_millis);
    Ok(Some(Target {
        protocol,
        url,
        headers,
        timeout,
    }))
}

/// Pushes metrics until stopped.
pub(crate) struct MetricsExporter {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsExporter {
    /// Starts pushing when an endpoint is configured.
    pub(crate) fn start(
        config: &crate::base::config::Config,
        source: Arc<dyn WebBackend>,
    ) -> crate::base::error::Result<Option<MetricsExporter>> {
        let Some(target) = target(&config.telemetry)? else {
            return Ok(None);
        };
        let interval = env("OTEL_METRIC_EXPORT_INTERVAL")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(Duration::from_secs(60), Duration::from_millis);
        let service = config
            .telemetry
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| config.app_id.clone());
        let shown = crate::base::telemetry::redact_url(&target.url);
        tracing::info!(protocol = ?target.protocol, url = %shown, ?interval, "exporting metrics over OTLP");
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let start_ns = now_ns();
            let mut client = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                let last = tokio::select! {
                    _ = ticker.tick() => false,
                    _ = &mut stopped => true,
                };
                // Reading the metrics reads LMDB and the log: off the async threads.
                let source = source.clone();
                let text = tokio::task::spawn_blocking(move || source.metrics())
                    .await
                    .unwrap_or_default();
                let request = request(&service, to_otlp(&text, start_ns, now_ns()));
                if let Err(e) = push(&target, &mut client, request).await {
                    tracing::warn!(url = %shown, error = %e, "pushing metrics over OTLP");
                }
                if last {
                    break;
                }
            }
        });
        Ok(Some(MetricsExporter { stop, task }))
    }

    /// Pushes once more and stops.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the last OTLP metrics push did not finish in 10 s");
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn request(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: attributes(&vec![("service.name".to_owned(), service.to_owned())]),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "rill".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn push(
    target: &Target,
    client: &mut Option<MetricsServiceClient<tonic::transport::Channel>>,
    request: ExportMetricsServiceRequest,
) -> Result<(), String> {
    match target.protocol {
        OtlpProtocol::Grpc => {
            if client.is_none() {
                let channel = tonic::transport::Endpoint::from_shared(target.url.clone())
                    .map_err(|_| "the endpoint is not a valid URI".to_owned())?
                    .timeout(target.timeout)
                    .connect_lazy();
                *client = Some(MetricsServiceClient::new(channel));
            }
            let Some(c) = client.as_mut() else {
                return Ok(());
            };
            let mut request = tonic::Request::new(request);
            for (k, v) in &target.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                    .map_err(|_| format!("header `{k}` is not a valid gRPC metadata key"))?;
                let value = v
                    .parse()
                    .map_err(|_| format!("the value of header `{k}` is not valid metadata"))?;
                request.metadata_mut().insert(key, value);
            }
            c.export(request)
                .await
                .map(|_| ())
                .map_err(|e| format!("{}: {}", e.code(), e.message()))
        }
        OtlpProtocol::HttpProtobuf => {
            let body = prost::Message::encode_to_vec(&request);
            let target = target.clone();
            tokio::task::spawn_blocking(move || {
                let mut post = reqwest::blocking::Client::builder()
                    .timeout(target.timeout)
                    .build()
                    .map_err(|e| e.to_string())?
                    .post(&target.url)
                    .header("content-type", "application/x-protobuf");
                for (k, v) in &target.headers {
                    post = post.header(k, v);
                }
                let response = post
                    .body(body)
                    .send()
                    // Without the URL: it may hold credentials.
                    .map_err(|e| e.without_url().to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", response.status()))
                }
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP rill_records_in_total Records handed to the agent.\n\
# TYPE rill_records_in_total counter\n\
rill_records_in_total{agent=\"a\",topic=\"t \\\"q\\\"\"} 7\n\
# HELP rill_ready 1 when ready.\n\
# TYPE rill_ready gauge\n\
rill_ready 1\n\
# HELP rill_processing_seconds Time.\n\
# TYPE rill_processing_seconds histogram\n\
rill_processing_seconds_bucket{agent=\"a\",le=\"0.1\"} 2\n\
rill_processing_seconds_bucket{agent=\"a\",le=\"1.0\"} 3\n\
rill_processing_seconds_bucket{agent=\"a\",le=\"+Inf\"} 4\n\
rill_processing_seconds_sum{agent=\"a\"} 5.5\n\
rill_processing_seconds_count{agent=\"a\"} 4\n";

    #[test]
    fn headers_parse_with_percent_decoding() {
        assert_eq!(
            parse_headers("V", "api-key=a%20b%3D, X-Tenant = t1").ok(),
            Some(vec![
                ("api-key".to_owned(), "a b=".to_owned()),
                ("x-tenant".to_owned(), "t1".to_owned())
            ])
        );
        assert!(parse_headers("V", "novalue").is_err());
    }

    #[test]
    fn prometheus_text_becomes_otlp() {
        let metrics = to_otlp(TEXT, 1, 2);
        let by_name = |n: &str| metrics.iter().find(|m| m.name == n).cloned();
        let Some(Metric {
            data: Some(metric::Data::Sum(sum)),
            ..
        }) = by_name("rill_records_in")
        else {
            panic!("{metrics:?}")
        };
        assert!(sum.is_monotonic);
        let p = &sum.data_points[0];
        assert_eq!(p.value, Some(number_data_point::Value::AsDouble(7.0)));
        let topic = p.attributes.iter().find(|kv| kv.key == "topic");
        assert_eq!(
            topic.and_then(|kv| kv.value.clone()).and_then(|v| v.value),
            Some(any_value::Value::StringValue("t \"q\"".into()))
        );
        assert!(matches!(
            by_name("rill_ready").and_then(|m| m.data),
            Some(metric::Data::Gauge(_))
        ));
        let Some(Metric {
            data: Some(metric::Data::Histogram(h)),
            ..
        }) = by_name("rill_processing_seconds")
        else {
            panic!("{metrics:?}")
        };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.bucket_counts, vec![2, 1, 1]);
        assert_eq!((p.count, p.sum), (4, Some(5.5)));
    }
}
