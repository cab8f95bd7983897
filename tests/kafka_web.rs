//! Table queries across workers on the Apache Kafka broker: two workers of one app share a
//! consumer group; asking either for any key answers with the value (the owner) or a 307 to
//! the owner's web address, which it learned from the group's membership.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http;
use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct Hit {
    #[record(key)]
    url: String,
}

#[agent(topic = "web-hits", tables(totals = "web_hit_totals"))]
async fn count_hits(mut hits: Stream<Hit>, totals: Table<String, u64>) -> rill::Result<()> {
    while let Some(hit) = hits.next().await {
        totals.update(hit.url, |n| n + 1)?;
    }
    Ok(())
}

fn owned(addr: SocketAddr) -> Vec<i64> {
    let reply = http::get(addr, "/status", None);
    let status: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
    status["agents"][0]["partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_i64()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_owned_by_the_other_worker_redirects_to_it() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let app_id = format!("kafka-web-{}", rand::random::<u32>());
    let start = |dir: std::path::PathBuf| {
        common::kafka_app(&app_id, &bootstrap, &dir)
            .partitions(4)
            .agents([count_hits::agent()])
            .configure(|c| c.web_port = Some(0))
            .start()
    };
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = start(da.path().to_path_buf()).await?;
    let b = start(db.path().to_path_buf()).await?;
    let (wa, wb) = (
        a.web_addr().expect("web server a"),
        b.web_addr().expect("web server b"),
    );
    // Keys of this run only (the topic outlives runs against one broker).
    let run = rand::random::<u32>();
    let urls: Vec<String> = (0..16).map(|i| format!("/{run}/page/{i}")).collect();
    for (i, url) in urls.iter().enumerate() {
        for _ in 0..=i {
            a.producer()
                .send_to("web-hits", &Hit { url: url.clone() })
                .await?;
        }
    }
    a.producer().flush().await?;
    let expected: BTreeMap<String, u64> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), i as u64 + 1))
        .collect();

    // Both workers own partitions once the group has settled, and every key is counted.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut redirects;
    loop {
        let (pa, pb) = (owned(wa), owned(wb));
        let mut got = BTreeMap::new();
        redirects = 0;
        if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4 {
            for url in &urls {
                let key = url.replace('/', "%2F");
                let path = format!("/tables/web_hit_totals/{key}");
                let mut reply = http::get(wa, &path, None);
                if reply.status == 307 {
                    let to = reply
                        .header("location")
                        .expect("a redirect names the owner");
                    let owner = http::addr_of(to).expect("socket address in the redirect");
                    assert_eq!(owner, wb, "redirected to the other worker: {to}");
                    redirects += 1;
                    reply = http::get(wb, &path, None);
                }
                if reply.status == 200
                    && let Some(n) = reply.json()["value"].as_u64()
                {
                    got.insert(url.clone(), n);
                }
            }
        }
        if got == expected && redirects > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions a={pa:?} b={pb:?}, redirects {redirects}, counts {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(redirects < urls.len(), "worker a owns some keys itself");
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
