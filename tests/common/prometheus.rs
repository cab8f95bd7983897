//! The Prometheus text a worker serves at `/metrics` (and returns from `metrics_text`).

/// The value of the sample whose name and labels are exactly `series`, e.g.
/// `rill_transactions_total{outcome="committed"}`.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
