//! The `view_to_click` example as a process on the embedded log, fed by its synthetic
//! generator: it prints each view that a click followed within 5 s, once, and none other.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn view_to_click_pairs_each_view_with_its_click_within_five_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    // 30 views on their own URLs: i % 3 == 1 gets a click 2 s later (a pair), i % 3 == 2 one
    // 8 s later (no pair), i % 3 == 0 none.
    let mut child = common::spawn_example(
        "view_to_click",
        &["--data-dir", data],
        &[("SYNTHETIC_VIEWS", "30")],
    );
    let lines = common::lines(&mut child);
    let successes = |l: &[String]| -> Vec<String> {
        l.iter()
            .filter_map(|line| {
                let rest = line.strip_prefix("Success! View on ")?;
                Some(rest.split_once(' ')?.0.to_owned())
            })
            .collect()
    };
    common::wait_lines(&lines, Duration::from_secs(30), |l| {
        successes(l).len() >= 10
    });
    // Anything paired twice, or wrongly, would show by now.
    std::thread::sleep(Duration::from_secs(2));
    let out = lines.lock().expect("lines").clone();
    let got = successes(&out);
    let want: BTreeSet<String> = (0..30)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("/article/{i}"))
        .collect();
    assert_eq!(got.len(), 10, "{out:#?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    let status = common::terminate(&mut child, Duration::from_secs(30));
    assert!(status.success(), "clean shutdown, got {status:?}");
}
