//! The `dead_letters` example as a process on the embedded log: test URLs and a malformed
//! record end up in `processing_failures`, `dlq list` shows them, and `dlq replay` sends them
//! back to `pageviews`, where the worker dead-letters the test URLs again.

mod common;

use std::time::Duration;

fn run(args: &[&str]) -> String {
    let out = common::run_example("dead_letters", args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The count `dlq list` prints for the agent.
fn dead_letters(data: &str) -> usize {
    let listed = run(&["--data-dir", data, "dlq", "list"]);
    listed
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("process_with_graceful_failure → processing_failures: ")?;
            rest.strip_suffix(" dead letters")?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no count in {listed}"))
}

#[test]
fn failing_records_are_dead_lettered_listed_and_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    // 20 views, every fifth to a test URL (4), and one malformed record.
    let mut worker = common::spawn_example_quiet(
        "dead_letters",
        &["--data-dir", data],
        &[("SYNTHETIC_VIEWS", "20"), ("RILL_LOG", "warn")],
    );
    common::wait_for("5 dead letters", Duration::from_secs(30), || {
        dead_letters(data) == 5
    });
    let listed = run(&["--data-dir", data, "dlq", "list"]);
    assert!(listed.contains("found a test URL"), "{listed}");
    assert!(listed.contains("decode"), "the malformed record: {listed}");
    assert!(
        listed.contains("pageviews["),
        "where it came from: {listed}"
    );

    // The fix is not deployed: replaying the test URLs dead-letters them again.
    let replayed = run(&[
        "--data-dir",
        data,
        "dlq",
        "replay",
        "process_with_graceful_failure",
        "--filter",
        "test URL",
    ]);
    assert!(replayed.contains("replayed 4 dead letters"), "{replayed}");
    common::wait_for("4 more dead letters", Duration::from_secs(30), || {
        dead_letters(data) == 9
    });
    // Only the ones that failed since a moment ago (none).
    let none = run(&[
        "--data-dir",
        data,
        "dlq",
        "replay",
        "process_with_graceful_failure",
        "--from",
        &(common::records::now_ms() + 60_000).to_string(),
    ]);
    assert!(none.contains("replayed 0 dead letters"), "{none}");

    let status = common::terminate(&mut worker, Duration::from_secs(30));
    assert!(
        status.success(),
        "the worker stays up through failures: {status:?}"
    );

    let unknown = common::run_example(
        "dead_letters",
        &["--data-dir", data, "dlq", "replay", "nobody"],
    );
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("no agent `nobody`"), "{err}");
}
