//! The app CLI, through the example binaries: the README quick start, `agents`, `send` with
//! type checking, config errors, and graceful shutdown on signals.

mod common;

use std::time::Duration;

#[test]
fn quick_start_prints_views_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let mut child = common::spawn_example(
        "pageviews",
        &["--data-dir", data],
        &[("SYNTHETIC_VIEWS", "3")],
    );
    let lines = common::lines(&mut child);
    common::wait_lines(&lines, Duration::from_secs(60), |l| {
        l.iter().filter(|s| s.contains(" visited ")).count() >= 3
    });
    common::signal(&child, "INT");
    let status = common::wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
}

#[test]
fn agents_lists_agents_topics_sinks_and_groups() {
    let out = common::run_example("sink", &["agents"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let to_hits = text
        .lines()
        .find(|l| l.starts_with("to_hits"))
        .unwrap_or_else(|| panic!("{text}"));
    for part in ["pageviews", "url_hits", " 2 ", "url_hits-to_hits"] {
        assert!(to_hits.contains(part), "`{part}` missing in: {to_hits}");
    }
    assert!(text.lines().any(|l| l.starts_with("print_hits")), "{text}");
}

#[test]
fn send_checks_the_record_type_and_the_worker_picks_it_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let bad = common::run_example(
        "sink",
        &["--data-dir", data, "send", "pageviews", r#"{"user_id": 1}"#],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("pageviews") && err.contains("json"), "{err}");

    let good = common::run_example(
        "sink",
        &[
            "--data-dir",
            data,
            "send",
            "pageviews",
            r#"{"user_id":"u9","url":"/sent","view_time":5.0}"#,
            "--key",
            "u9",
        ],
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let mut child =
        common::spawn_example("sink", &["--data-dir", data], &[("SYNTHETIC_VIEWS", "0")]);
    let lines = common::lines(&mut child);
    common::wait_lines(&lines, Duration::from_secs(60), |l| {
        l.iter().any(|s| s.contains("hit on /sent by u9"))
    });
    assert!(common::terminate(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn config_errors_name_the_setting_and_the_fix() {
    let out = common::run_example("sink", &["--broker", "redis://localhost", "agents"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--broker") && err.contains("kafka://"),
        "{err}"
    );

    let out = common::command("sink")
        .args(["agents"])
        .env("RILL_PARTITIONS", "none")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RILL_PARTITIONS"), "{err}");
}

#[test]
fn page_totals_continues_across_runs_and_tables_reads_the_local_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    for (run, expect) in [(1, 2), (2, 4)] {
        let mut child = common::spawn_example(
            "page_totals",
            &["--data-dir", data],
            &[("SYNTHETIC_VIEWS", "6")],
        );
        let lines = common::lines(&mut child);
        let want = format!("Running total for /docs: {expect}");
        common::wait_lines(&lines, Duration::from_secs(60), |l| l.contains(&want));
        assert!(
            common::terminate(&mut child, Duration::from_secs(30)).success(),
            "run {run}"
        );
    }
    let mut entries = common::table_json("page_totals", data, "url_view_totals");
    entries.sort_by_key(|e| e["key"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        entries,
        vec![
            serde_json::json!({"key": "/", "value": 4}),
            serde_json::json!({"key": "/docs", "value": 4}),
            serde_json::json!({"key": "/pricing", "value": 4}),
        ]
    );
    let one = common::run_example(
        "page_totals",
        &[
            "--data-dir",
            data,
            "tables",
            "url_view_totals",
            "--key",
            "/docs",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&one.stdout).trim(),
        r#"{"key":"/docs","value":4}"#
    );
    let list = common::run_example("page_totals", &["--data-dir", data, "tables"]);
    let text = String::from_utf8_lossy(&list.stdout);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("url_view_totals"))
        .expect("listed")
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "update_total_views");
    assert_eq!(
        &row[3..],
        ["3", row[4], "0"],
        "3 keys, no changelog lag: {text}"
    );
}

#[test]
fn graph_prints_the_topology_as_dot() {
    let out = common::run_example("page_totals", &["graph"]);
    assert!(out.status.success(), "{out:?}");
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    let agents = common::run_example("page_totals", &["agents"]);
    let listed = String::from_utf8_lossy(&agents.stdout);
    let first_agent = listed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no agent listed: {listed}"));
    for part in [first_agent, "pageviews", "-changelog", "->"] {
        assert!(dot.contains(part), "`{part}` missing in:\n{dot}");
    }
}

/// Runs the `sink` example's `reset` command on the embedded log in `data`.
fn reset(data: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--data-dir", data, "reset"];
    all.extend(args);
    common::run_example("sink", &all)
}

#[test]
fn reset_moves_a_stopped_group_and_the_worker_reprocesses_from_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let count_hits = |l: &[String]| l.iter().filter(|s| s.starts_with("hit on ")).count();
    // 20 views, 15 of them not internal: 15 hits.
    let mut child =
        common::spawn_example("sink", &["--data-dir", data], &[("SYNTHETIC_VIEWS", "20")]);
    let lines = common::lines(&mut child);
    common::wait_lines(&lines, Duration::from_secs(60), |l| count_hits(l) >= 15);
    let refused = reset(data, &["--to-earliest"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("a worker is running"), "{err}");
    assert!(common::terminate(&mut child, Duration::from_secs(30)).success());

    let group = "url_hits-to_hits";
    let plan = common::reset_moves(
        &reset(data, &["--agent", "to_hits", "--to-earliest", "--dry-run"]),
        group,
    );
    assert_eq!(plan.iter().map(|m| m.0).sum::<i64>(), 20, "{plan:?}");
    assert!(plan.iter().all(|m| m.1 == 0), "{plan:?}");
    let again = common::reset_moves(
        &reset(data, &["--agent", "to_hits", "--to-latest", "--dry-run"]),
        group,
    );
    assert_eq!(
        again.iter().map(|m| m.0).sum::<i64>(),
        20,
        "the dry run changed nothing"
    );
    assert_eq!(again.iter().map(|m| m.1).sum::<i64>(), 20, "{again:?}");
    let shifted = common::reset_moves(
        &reset(data, &["--agent", "to_hits", "--shift-by", "-1"]),
        group,
    );
    let expect: i64 = plan.iter().map(|m| (m.0 - 1).max(0)).sum();
    assert_eq!(
        shifted.iter().map(|m| m.1).sum::<i64>(),
        expect,
        "{shifted:?}"
    );
    let to_time = common::reset_moves(
        &reset(data, &["--agent", "to_hits", "--to-datetime", "2100-01-01"]),
        group,
    );
    assert_eq!(
        to_time.iter().map(|m| m.1).sum::<i64>(),
        20,
        "no record that late: the end"
    );
    let unknown = reset(data, &["--agent", "nope", "--to-earliest"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("nope") && err.contains("to_hits"), "{err}");

    // Back to the start: a restarted worker (no new views) relays the 15 hits again, and
    // `print_hits`, whose group was not reset, prints just those.
    common::reset_moves(
        &reset(data, &["--agent", "to_hits", "--to-earliest"]),
        group,
    );
    let mut child =
        common::spawn_example("sink", &["--data-dir", data], &[("SYNTHETIC_VIEWS", "0")]);
    let lines = common::lines(&mut child);
    common::wait_lines(&lines, Duration::from_secs(60), |l| count_hits(l) >= 15);
    assert!(common::terminate(&mut child, Duration::from_secs(30)).success());
}
