//! The worker's web server, over real HTTP: health, readiness, topology, table queries, the
//! app's routes and `#[page]`s, the bearer token, a taken port, `/metrics` checked by Prometheus's own `promtool`, and the status
//! page rendered by headless Chromium.
//!
//! `promtool` (Debian package `prometheus`) and `chromium` are skipped with a notice when
//! missing, unless `RILL_REQUIRE_TOOLS=1` (set by `scripts/test.sh` in CI).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{self, Reply};
use rill::Worker;
use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct View {
    #[record(key)]
    url: String,
    user: String,
}

#[agent(topic = "views", tables(totals = "web_totals"))]
async fn count_views(mut views: Stream<View>, totals: Table<String, u64>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        totals.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

#[agent(topic = "views", sink = "visits")]
async fn visitors(mut views: Stream<View>, visits: Sink<View>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        visits.send(&view).await?;
    }
    Ok(())
}

async fn start(configure: impl FnOnce(&mut rill::Config)) -> rill::Result<(Worker, SocketAddr)> {
    let worker = App::new("web_test")
        .memory()
        .agents([count_views::agent(), visitors::agent()])
        .configure(|c| {
            c.web_port = Some(0);
            configure(c);
        })
        .start()
        .await?;
    let addr = worker
        .web_addr()
        .expect("the web server runs when web_port is set");
    Ok((worker, addr))
}

async fn send_views(worker: &Worker, urls: &[&str]) -> rill::Result<()> {
    let views = urls.iter().enumerate().map(|(i, url)| View {
        url: (*url).to_owned(),
        user: format!("user-{i}"),
    });
    common::records::send_all(&worker.producer(), "views", views).await
}

/// `GET path` over a fresh HTTP/1.1 connection (on a blocking thread: the server runs on
/// this test's runtime).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let (path, token) = (path.to_owned(), token.map(str::to_owned));
    tokio::task::spawn_blocking(move || http::get(addr, &path, token.as_deref()))
        .await
        .expect("http client thread")
}

/// Polls `path` until `done` accepts the reply (or 15 s), and returns the last reply.
async fn get_until(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    done: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = get(addr, path, token).await;
        if done(&reply) || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of `rill_records_in_total` over the agent's topics.
fn records_in(metrics: &str, agent: &str) -> Option<f64> {
    let label = format!("agent=\"{agent}\"");
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("rill_records_in_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// An external program, or `None` (with a notice) when it is not installed and not required.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("RILL_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "`{name}` is not on PATH and RILL_REQUIRE_TOOLS=1: apt-get install {package}"
        );
        eprintln!("SKIPPED: `{name}` is not installed (Debian package `{package}`)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_readiness_and_topology_on_loopback() -> rill::Result<()> {
    assert_eq!(
        rill::Config::new("x").web_bind,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "this host only unless asked"
    );
    let (worker, addr) = start(|_| {}).await?;
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0, "port 0 picks a free port");

    let health = get(addr, "/health", None).await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("alive"))
    );
    let ready = get_until(addr, "/ready", None, |r| r.status == 200).await;
    assert_eq!(ready.json()["status"], "ready", "{ready:?}");

    let topology = get(addr, "/topology", None).await;
    assert_eq!(topology.status, 200);
    let t = topology.json();
    let agents: Vec<&str> = t["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(agents, ["count_views", "visitors"]);
    let topics: Vec<&str> = t["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    for topic in ["views", "visits"] {
        assert!(topics.contains(&topic), "{topic} in {topics:?}");
    }
    assert!(t["tables"].to_string().contains("web_totals"), "{t}");

    let svg = get(addr, "/topology.svg", None).await;
    assert_eq!(
        svg.header("content-type"),
        Some("image/svg+xml; charset=utf-8")
    );
    assert!(svg.body.starts_with("<svg"), "{}", svg.body);
    for agent in ["count_views", "visitors"] {
        assert!(
            svg.body.contains(&format!("data-agent=\"{agent}\"")),
            "{agent}"
        );
    }
    let dot = get(addr, "/topology.dot", None).await;
    assert!(dot.body.starts_with("digraph"), "{}", dot.body);
    assert!(
        dot.body
            .contains("\"topic:views\" -> \"agent:count_views\"")
    );

    let status = get(addr, "/status", None).await.json();
    assert_eq!(status["app"], "web_test");
    assert_eq!(status["url"], format!("http://{addr}"));
    assert_eq!(status["agents"][0]["name"], "count_views");

    let unknown = get(addr, "/nope", None).await;
    assert_eq!(unknown.status, 404);
    worker.shutdown().await?;
    assert!(
        TcpStream::connect(addr).is_err(),
        "the port is closed after shutdown"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_counters_move() -> rill::Result<()> {
    let (worker, addr) = start(|_| {}).await?;
    send_views(&worker, &["/a", "/b", "/c", "/d", "/e"]).await?;
    let first = get_until(addr, "/metrics", None, |r| {
        records_in(&r.body, "count_views").is_some_and(|n| n >= 5.0)
    })
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = records_in(&first.body, "count_views").expect("rill_records_in_total");
    assert_eq!(before, 5.0, "{}", first.body);
    for name in [
        "rill_records_out_total",
        "rill_processing_seconds",
        "rill_commits_total",
    ] {
        assert!(first.body.contains(name), "{name} in\n{}", first.body);
    }

    if let Some(promtool) = tool("promtool", "prometheus") {
        let body = first.body.clone().into_bytes();
        let out = tokio::task::spawn_blocking(move || {
            common::run_to_end(
                Command::new(promtool).args(["check", "metrics"]),
                &body,
                Duration::from_secs(60),
            )
        })
        .await
        .expect("promtool thread");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            first.body
        );
    }

    send_views(&worker, &["/a", "/b", "/c", "/d", "/e", "/f", "/g"]).await?;
    let second = get_until(addr, "/metrics", None, |r| {
        records_in(&r.body, "count_views").is_some_and(|n| n >= 12.0)
    })
    .await;
    assert_eq!(
        records_in(&second.body, "count_views"),
        Some(12.0),
        "{}",
        second.body
    );
    worker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_everything_but_health_and_the_page() -> rill::Result<()> {
    let (worker, addr) = start(|c| c.web_token = Some("s3cret".into())).await?;
    let mut bodies = Vec::new();
    for path in [
        "/metrics",
        "/ready",
        "/status",
        "/topology",
        "/topology.svg",
        "/tables/web_totals/a",
    ] {
        let none = get(addr, path, None).await;
        assert_eq!(none.status, 401, "{path} without a token");
        assert_eq!(
            none.header("www-authenticate"),
            Some("Bearer realm=\"rill\"")
        );
        let wrong = get(addr, path, Some("s3cres")).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let right = get(addr, path, Some("s3cret")).await;
        assert_ne!(right.status, 401, "{path} with the token");
        bodies.extend([none.body, wrong.body, right.body]);
    }
    let metrics = get(addr, "/metrics", Some("s3cret")).await;
    assert_eq!(metrics.status, 200);
    for path in ["/health", "/", "/assets/status.js", "/assets/status.css"] {
        let open = get(addr, path, None).await;
        assert_eq!(open.status, 200, "{path} needs no token");
        bodies.push(open.body);
    }
    for body in &bodies {
        assert!(!body.contains("s3cret"), "the token leaked: {body}");
    }
    worker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = App::new("web_taken")
        .memory()
        .agents([visitors::agent()])
        .configure(|c| c.web_port = Some(port))
        .start()
        .await
        .err()
        .expect("the worker does not start");
    let msg = err.to_string();
    assert!(
        msg.contains("--web-port") && msg.contains(&format!("127.0.0.1:{port} is in use")),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_answer_a_key_with_its_value_or_404() -> rill::Result<()> {
    let (worker, addr) = start(|_| {}).await?;
    send_views(&worker, &["/a", "/b", "/a", "/a"]).await?;
    // Keys holding `/` travel percent-encoded in one path segment.
    let found = get_until(addr, "/tables/web_totals/%2Fa", None, |r| {
        r.status == 200 && r.json()["value"] == 3
    })
    .await;
    assert_eq!(found.status, 200, "{found:?}");
    let json = found.json();
    assert_eq!(
        (&json["table"], &json["key"], &json["value"]),
        (&"web_totals".into(), &"/a".into(), &3.into())
    );
    let b = get(addr, "/tables/web_totals/%2Fb", None).await.json();
    assert_eq!(b["value"], 1);

    let missing = get(addr, "/tables/web_totals/%2Fnever", None).await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(
        missing.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no value"))
    );
    let no_table = get(addr, "/tables/nothing/a", None).await;
    assert_eq!(no_table.status, 404);
    assert!(
        no_table.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no table"))
    );
    worker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_headless_chromium() -> rill::Result<()> {
    let Some(chromium) = tool("chromium", "chromium") else {
        return Ok(());
    };
    let (worker, addr) = start(|_| {}).await?;
    send_views(&worker, &["/a", "/b", "/c"]).await?;
    let dir = tempfile::tempdir().expect("tempdir");
    let browse = |extra: Vec<String>| {
        let mut cmd = Command::new(&chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .args(extra)
        .arg(format!("http://{addr}/"));
        async move {
            tokio::task::spawn_blocking(move || {
                common::run_to_end(&mut cmd, b"", Duration::from_secs(120))
            })
            .await
            .expect("chromium thread")
        }
    };

    let dump = browse(vec!["--dump-dom".into()]).await;
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    for agent in ["count_views", "visitors"] {
        assert!(
            dom.contains(&format!("<td class=\"agent-name\">{agent}</td>")),
            "agents table lists {agent}:\n{dom}"
        );
        assert!(
            dom.contains(&format!("<g class=\"agent\" data-agent=\"{agent}\">")),
            "graph draws {agent}:\n{dom}"
        );
    }
    assert!(dom.contains("<svg"), "{dom}");
    assert!(dom.contains(">ready</span>"), "readiness shown:\n{dom}");

    let png = dir.path().join("status.png");
    let shot = browse(vec![
        format!("--screenshot={}", png.display()),
        "--window-size=1280,900".into(),
    ])
    .await;
    assert!(
        shot.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(
        bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"),
        "{} bytes",
        bytes.len()
    );
    worker.shutdown().await
}

/// The worker with the app's own route `/count/{url}`, answering from `web_totals` through a
/// `TableReader`.
async fn start_with_routes(token: Option<&str>) -> rill::Result<(Worker, SocketAddr)> {
    use axum::extract::Path;
    use axum::routing::get;
    let token = token.map(str::to_owned);
    let worker = App::new("web_routes")
        .memory()
        .agents([count_views::agent()])
        .configure(|c| {
            c.web_port = Some(0);
            c.web_token = token;
        })
        .routes(|tables| {
            let totals = tables
                .reader::<String, u64>("web_totals")
                .expect("count_views declares web_totals");
            axum::Router::new().route(
                "/count/{url}",
                get(move |Path(url): Path<String>| async move {
                    axum::Json(totals.get(&format!("/{url}")).map_err(|e| e.to_string()))
                }),
            )
        })
        .start()
        .await?;
    let addr = worker.web_addr().expect("web server");
    Ok((worker, addr))
}

#[tokio::test]
async fn the_apps_routes_are_served_beside_rills_and_read_tables() -> rill::Result<()> {
    let (worker, addr) = start_with_routes(None).await?;
    send_views(&worker, &["/a", "/a", "/b"]).await?;
    let a = get_until(addr, "/count/a", None, |r| r.body.contains('2')).await;
    assert_eq!((a.status, a.json()), (200, serde_json::json!({ "Ok": 2 })));
    let b = get(addr, "/count/b", None).await;
    assert_eq!(b.json(), serde_json::json!({ "Ok": 1 }));
    let none = get(addr, "/count/c", None).await;
    assert_eq!(none.json(), serde_json::json!({ "Ok": null }));
    // rill's own routes are still there, and unknown paths still get rill's 404.
    assert_eq!(get(addr, "/metrics", None).await.status, 200);
    assert_eq!(get(addr, "/nothing", None).await.status, 404);
    worker.shutdown().await
}

#[tokio::test]
async fn the_apps_routes_need_the_token_too() -> rill::Result<()> {
    let (worker, addr) = start_with_routes(Some("s3cret")).await?;
    assert_eq!(get(addr, "/count/a", None).await.status, 401);
    assert_eq!(get(addr, "/count/a", Some("wrong")).await.status, 401);
    assert_eq!(get(addr, "/count/a", Some("s3cret")).await.status, 200);
    worker.shutdown().await
}

#[tokio::test]
async fn a_route_rill_serves_is_refused_at_start() {
    let started = App::new("web_routes_clash")
        .memory()
        .agents([count_views::agent()])
        .configure(|c| c.web_port = Some(0))
        .routes(|_| axum::Router::new().route("/metrics", axum::routing::get(|| async { "mine" })))
        .start()
        .await;
    let err = started
        .err()
        .expect("an overlapping route stops the start")
        .to_string();
    assert!(
        err.contains("App::routes") && err.contains("/metrics"),
        "the error names the setting and rill's routes: {err}"
    );
}

/// `GET /page/{url}`: a `#[page]` reading `web_totals` through a `TableReader`.
#[page("/page/{url}", tables(totals = "web_totals"))]
async fn page_count(
    axum::extract::Path(url): axum::extract::Path<String>,
    totals: TableReader<String, u64>,
) -> axum::Json<Option<u64>> {
    axum::Json(totals.get(&format!("/{url}")).ok().flatten())
}

#[page("/page/{url}", method = "post")]
async fn echo_url(axum::extract::Path(url): axum::extract::Path<String>) -> String {
    url
}

#[page("/missing")]
async fn missing(nope: TableReader<String, u64>) -> String {
    format!("{}", nope.get(&String::new()).is_ok())
}

async fn start_with_pages(pages: Vec<rill::PageSpec>) -> rill::Result<Worker> {
    App::new("web_pages")
        .memory()
        .agents([count_views::agent()])
        .pages(pages)
        .configure(|c| {
            c.web_port = Some(0);
            c.web_token = Some("s3cret".into());
        })
        .start()
        .await
}

#[tokio::test]
async fn pages_are_served_with_their_table_readers_behind_the_token() -> rill::Result<()> {
    let worker = start_with_pages(vec![page_count::page(), echo_url::page()]).await?;
    let addr = worker.web_addr().expect("web server");
    send_views(&worker, &["/a", "/a", "/b"]).await?;
    let a = get_until(addr, "/page/a", Some("s3cret"), |r| r.body.contains('2')).await;
    assert_eq!((a.status, a.json()), (200, serde_json::json!(2)));
    let c = get(addr, "/page/c", Some("s3cret")).await;
    assert_eq!(c.json(), serde_json::json!(null));
    assert_eq!(get(addr, "/page/a", None).await.status, 401);
    worker.shutdown().await
}

#[tokio::test]
async fn a_page_over_a_missing_table_or_on_a_taken_path_stops_the_start() {
    let err = start_with_pages(vec![missing::page()])
        .await
        .err()
        .expect("a missing table stops the start")
        .to_string();
    assert!(
        err.contains("page `missing`") && err.contains("`nope`"),
        "{err}"
    );
    let err = start_with_pages(vec![page_count::page(), page_count::page()])
        .await
        .err()
        .expect("two pages on one path")
        .to_string();
    assert!(
        err.contains("/page/{url}") && err.contains("served by page `page_count`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reader_of_a_table_no_agent_declares_names_the_ones_there_are() -> rill::Result<()> {
    let (worker, _) = start(|_| {}).await?;
    let err = worker
        .tables()
        .reader::<String, u64>("nope")
        .err()
        .expect("no such table")
        .to_string();
    assert!(
        err.contains("`nope`") && err.contains("web_totals"),
        "the error lists the worker's tables: {err}"
    );
    worker.shutdown().await
}

#[record]
#[derive(Debug, Clone)]
struct Profile {
    #[record(key)]
    user: String,
    plan: String,
}

#[agent(topic = "views", global_tables(profiles = "web_profiles"))]
async fn with_profiles(
    mut views: Stream<View>,
    profiles: GlobalTable<String, Profile>,
) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        profiles.get(&view.user)?;
    }
    Ok(())
}

#[tokio::test]
async fn global_tables_answer_table_queries_on_every_worker() -> rill::Result<()> {
    let worker = App::new("web_globals")
        .memory()
        .agents([with_profiles::agent()])
        .configure(|c| c.web_port = Some(0))
        .start()
        .await?;
    let addr = worker.web_addr().expect("web server");
    let profile = Profile {
        user: "u1".into(),
        plan: "pro".into(),
    };
    worker.producer().send_to("web_profiles", &profile).await?;
    worker.producer().flush().await?;
    let found = get_until(addr, "/tables/web_profiles/u1", None, |r| r.status == 200).await;
    assert_eq!(
        found.json()["value"],
        serde_json::json!({ "user": "u1", "plan": "pro" })
    );
    assert_eq!(get(addr, "/tables/web_profiles/u2", None).await.status, 404);
    worker.shutdown().await
}

#[agent(topic = "views", tables(per_minute = "web_minute_views"))]
async fn views_per_minute(
    mut views: Stream<View>,
    per_minute: Table<String, u64>,
) -> rill::Result<()> {
    let per_minute = per_minute.tumbling(Duration::from_secs(60));
    while let Some(view) = views.next().await {
        per_minute.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

#[tokio::test]
async fn a_windowed_table_answers_the_window_at_a_time() -> rill::Result<()> {
    let worker = App::new("web_windowed")
        .memory()
        .agents([views_per_minute::agent()])
        .configure(|c| c.web_port = Some(0))
        .start()
        .await?;
    let addr = worker.web_addr().expect("web server");
    send_views(&worker, &["/a", "/a", "/a"]).await?;
    // After the sends: the views' window (their timestamps) started at or before this.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let path = format!("/tables/web_minute_views/%2Fa?at={now}");
    let found = get_until(addr, &path, None, |r| {
        r.status == 200 && r.json()["value"]["value"] == serde_json::json!(3)
    })
    .await;
    let window = found.json()["value"].clone();
    assert_eq!(window["value"], serde_json::json!(3), "{window}");
    let start = window["window_start"].as_i64().expect("window_start");
    assert!(start <= now && now - start < 120_000, "{window}");
    // Before any window of the key: nothing; a bad time: 400.
    let before = get(
        addr,
        &format!("/tables/web_minute_views/%2Fa?at={}", now - 3_600_000),
        None,
    )
    .await;
    assert_eq!(before.status, 404);
    assert_eq!(
        get(addr, "/tables/web_minute_views/%2Fa?at=yesterday-ish", None)
            .await
            .status,
        400
    );
    worker.shutdown().await
}
