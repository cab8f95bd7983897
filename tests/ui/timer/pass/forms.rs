use rill::prelude::*;

#[timer(every = "10s")]
async fn plain(producer: Producer) -> rill::Result<()> {
    producer.send_to("ticks", &"tick".to_owned()).await
}

#[timer(every = 0.5, on_leader = true, on_error = "retry", retries = 2, retry_backoff_ms = 50)]
async fn with_context(cx: TimerContext) -> rill::Result<()> {
    let _ = cx.scheduled_ms();
    Ok(())
}

#[timer(every = "1h", tables(totals = "url_totals"), on_error = "stop")]
async fn reading(totals: TableReader<String, u64>, url_counts: TableReader<String, u64>, cx: TimerContext) -> rill::Result<()> {
    let _ = (totals.len()?, url_counts.len()?, cx.name());
    Ok(())
}

#[crontab("0 20 * * *", timezone = "Europe/Paris", on_leader = true)]
async fn nightly(producer: Producer) -> rill::Result<()> {
    producer.flush().await
}

#[crontab("*/15 * * * * *")]
async fn seconds() -> rill::Result<()> {
    Ok(())
}

fn main() {
    let _ = App::new("t").timers([plain::timer(), with_context::timer(), reading::timer(), nightly::timer(), seconds::timer()]);
    assert_eq!(nightly::timer().name(), "nightly");
    assert!(nightly::timer().is_on_leader());
}
