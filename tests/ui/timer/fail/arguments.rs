use rill::prelude::*;

#[timer(every = "10 parsecs")]
async fn bad_interval() -> rill::Result<()> {
    Ok(())
}

#[timer(on_leader = true)]
async fn no_interval() -> rill::Result<()> {
    Ok(())
}

#[timer(every = "1s", evry = 3, on_error = "dead_letter")]
async fn unknown_key_and_policy() -> rill::Result<()> {
    Ok(())
}

#[timer(every = "1s", retries = 3)]
async fn retries_without_retrying() -> rill::Result<()> {
    Ok(())
}

#[crontab("0 25 * * *", timezone = "Mars/Olympus")]
async fn bad_cron_and_zone() -> rill::Result<()> {
    Ok(())
}

#[crontab(timezone = "UTC")]
async fn no_expression() -> rill::Result<()> {
    Ok(())
}

fn main() {}
