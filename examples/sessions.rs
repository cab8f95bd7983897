//! Session windows: each user's visits, a visit being views at most 30 s apart.
//!
//! ```text
//! cargo run --example sessions                                  # embedded log, synthetic views
//! cargo run --example sessions -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! Views are re-keyed by user and grouped into sessions: a view within the gap (30 s of event
//! time) of a session joins it, and a view that bridges two sessions merges them. Each session
//! accumulates into `Visit` (views and distinct pages), a user struct marked `#[window_state]`.
//! The agent prints every change to an open session (`Emit::Update`), and
//! `on_window_close` logs each session once it is over: when the watermark passes its last
//! view plus the gap.
//!
//! With no broker the app generates `SYNTHETIC_VIEWS` views (default 60, 0 for none): `user-0`
//! makes visits of 3 views, `user-1` of 4 and `user-2` of 5, 10 s apart, pausing 100 s
//! between visits: every visit is one session.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::collections::BTreeSet;
use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    #[record(key)]
    user_id: String,
    url: String,
    #[record(timestamp)]
    view_time: f64,
}

/// What a session accumulates. `Default` is the empty session; the state is stored (as JSON)
/// in the window's table, so it survives restarts.
#[window_state]
#[derive(Default, Clone, Debug)]
struct Visit {
    views: u64,
    pages: BTreeSet<String>,
}

impl WindowState<PageView> for Visit {
    fn add(&mut self, view: &PageView) {
        self.views += 1;
        self.pages.insert(view.url.clone());
    }
}

/// Two sessions become one when a view falls within the gap of both.
impl MergeState for Visit {
    fn merge(&mut self, other: Self) {
        self.views += other.views;
        self.pages.extend(other.pages);
    }
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");

#[agent(topic = PAGEVIEWS)]
async fn user_sessions(views: Stream<PageView>) -> rill::Result<()> {
    let mut sessions = views
        .group_by(PageView::user_id)
        .session(Duration::from_secs(30))
        .emit(Emit::Update)
        .aggregate::<Visit>()
        // Runs for every session as it closes, with its final value (in either emit mode).
        .on_window_close(|session| {
            tracing::info!(
                user = %session.key,
                views = session.value.views,
                pages = session.value.pages.len(),
                seconds = (session.end - session.start) / 1000,
                "session closed"
            );
        });
    while let Some(session) = sessions.next().await {
        println!(
            "{} is visiting: {} views on {} pages since {}",
            session.key,
            session.value.views,
            session.value.pages.len(),
            clock(session.start)
        );
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("sessions").task(synthetic_views).main()
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Sends the three users' visits, merged in time order, ending now.
async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    let count: usize = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!("no broker configured: sending {count} synthetic page views (Ctrl-C to stop)");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let urls = ["/", "/pricing", "/docs", "/blog"];
    // (seconds from the start, view) for every user.
    let mut views: Vec<(u64, PageView)> = (0..3)
        .flat_map(|user: usize| {
            let per_visit = 3 + user;
            (0..count).map(move |n| {
                let (visit, nth) = (n / per_visit, n % per_visit);
                let at = (visit * (10 * (per_visit - 1) + 100) + 10 * nth) as u64;
                let view = PageView {
                    user_id: format!("user-{user}"),
                    url: urls[(n + user) % urls.len()].to_owned(),
                    view_time: 0.0,
                };
                (at, view)
            })
        })
        .collect();
    views.sort_by_key(|(at, _)| *at);
    views.truncate(count);
    // Shift them so that the last view happens now.
    let start = now.saturating_sub(views.last().map_or(0, |(at, _)| *at));
    for (at, mut view) in views {
        view.view_time = (start + at) as f64;
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("sent {count} synthetic page views");
    Ok(())
}
