//! `SetTable` (Faust's set tables) on the test harness: members added and discarded per key,
//! an emptied key removed, and the sets committed and read back like any table.

mod common;

use std::collections::BTreeSet;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct Visit {
    #[record(key)]
    url: String,
    user: String,
    left: bool,
}

#[agent(topic = "visits", tables(visitors = "url_visitors"))]
async fn track(mut visits: Stream<Visit>, visitors: SetTable<String, String>) -> rill::Result<()> {
    while let Some(v) = visits.next().await {
        if v.left {
            visitors.discard(&v.url, &v.user)?;
        } else {
            visitors.add(v.url.clone(), v.user.clone())?;
            assert!(visitors.contains(&v.url, &v.user)?);
        }
    }
    Ok(())
}

fn visit(url: &str, user: &str, left: bool) -> Visit {
    Visit {
        url: url.into(),
        user: user.into(),
        left,
    }
}

#[tokio::test]
async fn members_are_added_and_discarded_per_key() -> rill::Result<()> {
    let app = App::new("set_table")
        .agents([track::agent()])
        .test()
        .await?;
    let visits = [
        visit("/a", "ann", false),
        visit("/a", "bob", false),
        visit("/a", "ann", false),
        visit("/b", "cy", false),
        visit("/a", "bob", true),
        visit("/b", "cy", true),
        visit("/b", "nobody", true),
    ];
    common::records::send_all(app.producer(), "visits", visits).await?;
    let want: Vec<(String, BTreeSet<String>)> = vec![("/a".into(), ["ann".to_owned()].into())];
    app.wait_until("the sets are committed", |app| {
        app.table::<String, BTreeSet<String>>("url_visitors")
            .is_ok_and(|t| t == want)
    })
    .await?;
    app.stop().await
}
