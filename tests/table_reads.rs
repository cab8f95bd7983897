//! Reading many entries of a table: `entries`, `range` and `prefix` inside the owning agent
//! (its uncommitted writes and removals included, across more than one page of the store),
//! and `TableReader` from outside it.

mod common;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct View {
    #[record(key)]
    url: String,
    user: String,
}

/// What a scan of the table found, sent when a view from user "scan" arrives.
#[record]
#[derive(Debug, Clone, PartialEq)]
struct Scan {
    all: usize,
    prefix_a: Vec<String>,
    range_b: Vec<String>,
    sum: u64,
}

#[agent(topic = "views", sink = "scans", tables(totals = "read_totals"))]
async fn count_and_scan(
    mut views: Stream<View>,
    totals: Table<String, u64>,
    scans: Sink<Scan>,
) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        match view.user.strip_prefix("scan ") {
            Some(keys) => {
                // Writes of this very record are uncommitted when the scan runs: its own key
                // (stored) removed, a new key, and a key written then removed (both of its
                // partition, as table writes must be).
                let (new, gone) = keys.split_once(' ').expect("two keys");
                totals.remove(&view.url)?;
                totals.insert(new.to_owned(), 5)?;
                totals.insert(gone.to_owned(), 1)?;
                totals.remove(&gone.to_owned())?;
                let all: Vec<(String, u64)> = totals.entries().collect::<rill::Result<_>>()?;
                let prefix_a = totals
                    .prefix("/a/")
                    .map(|e| e.map(|(k, _)| k))
                    .collect::<rill::Result<_>>()?;
                let range_b = totals
                    .range("/b/0".to_owned().."/b/5".to_owned())
                    .map(|e| e.map(|(k, _)| k))
                    .collect::<rill::Result<_>>()?;
                let scan = Scan {
                    all: all.len(),
                    sum: all.iter().map(|(_, n)| n).sum(),
                    prefix_a,
                    range_b,
                };
                scans.send(&scan).await?;
            }
            None => {
                totals.update(view.url, |n| n + 1)?;
            }
        }
    }
    Ok(())
}

fn view(url: String, user: &str) -> View {
    View {
        url,
        user: user.to_owned(),
    }
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[tokio::test]
async fn scans_merge_the_store_with_uncommitted_writes_page_by_page() -> rill::Result<()> {
    let app = App::new("table_scans")
        .agents([count_and_scan::agent()])
        .test()
        .await?;
    // 700 keys, more than two pages of the store: the first half committed before the rest
    // is sent.
    let a: Vec<String> = (0..350).map(|i| format!("/a/{i}")).collect();
    let b: Vec<String> = (0..350).map(|i| format!("/b/{i}")).collect();
    common::records::send_all(
        app.producer(),
        "views",
        a.iter().map(|u| view(u.clone(), "u")),
    )
    .await?;
    app.wait_until("the first half is committed", |app| {
        app.table::<String, u64>("read_totals")
            .is_ok_and(|t| t.len() == 350)
    })
    .await?;
    let mut rest: Vec<View> = b.iter().map(|u| view(u.clone(), "u")).collect();
    rest.push(view("/a/1".into(), "u"));
    // The scan record is /a/0's; two /c/ keys of its partition ride along.
    let partition = |k: &str| rill::partitioner::partition_for_key(k.as_bytes(), 8);
    let mut same: Vec<String> = (0..)
        .map(|i| format!("/c/{i}"))
        .filter(|k| partition(k) == partition("/a/0"))
        .take(2)
        .collect();
    let (gone, new) = (same.pop().expect("two"), same.pop().expect("two"));
    rest.push(view("/a/0".into(), &format!("scan {new} {gone}")));
    common::records::send_all(app.producer(), "views", rest).await?;
    let scans: Vec<Scan> = app.expect("scans", 1).await?;
    let want_a = sorted(a[1..].to_vec());
    let want_b: Vec<String> = sorted(
        b.iter()
            .filter(|k| k.as_str() >= "/b/0" && k.as_str() < "/b/5")
            .cloned()
            .collect(),
    );
    // 700 keys, /a/0 removed, one /c/ key added; 701 views, less /a/0's, plus 5.
    assert_eq!(scans[0].all, 700);
    assert_eq!(scans[0].sum, 705);
    assert_eq!(sorted(scans[0].prefix_a.clone()), want_a);
    assert_eq!(sorted(scans[0].range_b.clone()), want_b);
    app.stop().await
}

#[tokio::test]
async fn a_reader_sees_what_the_owner_committed() -> rill::Result<()> {
    let app = App::new("table_reader")
        .agents([count_and_scan::agent()])
        .test()
        .await?;
    let views = (0..300).map(|i| view(format!("/p/{}", i % 100), "u"));
    common::records::send_all(app.producer(), "views", views).await?;
    let reader = app.tables().reader::<String, u64>("read_totals")?;
    app.wait_until("the reader sees every key", |_| {
        reader.len().is_ok_and(|n| n == 100)
    })
    .await?;
    assert_eq!(reader.get(&"/p/7".to_owned())?, Some(3));
    assert_eq!(reader.get(&"/q".to_owned())?, None);
    assert_eq!(reader.partitions()?, (0..8).collect::<Vec<_>>());
    let all: Vec<(String, u64)> = reader.entries()?.collect::<rill::Result<_>>()?;
    assert_eq!(all.iter().map(|(_, n)| n).sum::<u64>(), 300);
    let tens: Vec<String> = reader
        .prefix("/p/1")?
        .map(|e| e.map(|(k, _)| k))
        .collect::<rill::Result<_>>()?;
    assert_eq!(tens.len(), 11, "/p/1 and /p/10../p/19: {tens:?}");
    let wrong = app.tables().reader::<String, Vec<u8>>("read_totals")?;
    let err = wrong
        .get(&"/p/7".to_owned())
        .expect_err("a type mismatch")
        .to_string();
    assert!(
        err.contains("read_totals") && err.contains("decode"),
        "{err}"
    );
    app.stop().await
}
