//! The examples of timers, request/reply, through/echo, the app's own web routes and a table
//! built from a topic, as
//! processes on the embedded log: each prints (or serves) what its agents and timers worked
//! out, and stops cleanly on SIGTERM.

mod common;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn stop(child: &mut common::Proc) {
    let status = common::terminate(child, Duration::from_secs(30));
    assert!(status.success(), "clean shutdown, got {status:?}");
}

/// Runs `example` until `done` holds for its printed lines; returns them.
fn run_until(example: &str, args: &[&str], done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let mut all = vec!["--data-dir", data, "--no-web"];
    all.extend_from_slice(args);
    let mut child = common::spawn_example(example, &all, &[]);
    let lines = common::lines(&mut child);
    let out = common::wait_lines(&lines, WAIT, done);
    stop(&mut child);
    out
}

#[test]
fn the_ask_example_gets_answers_and_casts() {
    let out = run_until("ask", &[], |l| {
        l.iter()
            .filter(|l| l.contains("the adder answered"))
            .count()
            >= 2
            && l.iter().any(|l| l.starts_with("cast:"))
    });
    for line in out.iter().filter(|l| l.starts_with("asked ")) {
        // "asked 46 + 1, the adder answered 47"
        let a: i64 = line["asked ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a");
        assert!(line.ends_with(&format!("answered {}", a + 1)), "{line}");
    }
}

#[test]
fn the_timers_example_publishes_totals_from_the_table() {
    let out = run_until("timers", &[], |l| {
        l.iter()
            .any(|l| l.starts_with("totals: ") && !l.starts_with("totals: 0 "))
    });
    let line = out
        .iter()
        .rev()
        .find(|l| l.starts_with("totals: "))
        .expect("a totals line");
    assert!(line.ends_with("of 3 URLs"), "{line}");
}

#[test]
fn the_through_echo_example_skips_health_checks() {
    let out = run_until("through_echo", &[], |l| {
        l.iter().filter(|l| l.contains(" viewed ")).count() >= 6
    });
    let viewed: Vec<&String> = out.iter().filter(|l| l.contains(" viewed ")).collect();
    assert!(viewed.iter().all(|l| !l.contains("/health")), "{viewed:#?}");
}

#[test]
fn the_user_page_example_serves_counts_from_a_table() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let port_arg = port.to_string();
    let mut child = common::spawn_example(
        "user_page",
        &["--data-dir", data, "--web-port", &port_arg],
        &[],
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut count = 0;
    common::wait_for(
        "GET /count/pricing counts views",
        WAIT,
        || match common::http::try_get(addr, "/count/pricing", None) {
            Ok(reply) if reply.status == 200 => {
                count = reply.body.trim().parse().unwrap_or(0);
                count >= 2
            }
            _ => false,
        },
    );
    assert!(count >= 2);
    stop(&mut child);
}

#[test]
fn the_ktable_example_enriches_orders_from_the_customers_topic() {
    let out = run_until("ktable", &[], |l| {
        l.iter().filter(|l| l.starts_with("order of ")).count() >= 4
    });
    let orders: Vec<&String> = out.iter().filter(|l| l.starts_with("order of ")).collect();
    assert!(
        orders.iter().any(|l| l.contains("by Ada (gold tier)")),
        "{orders:#?}"
    );
    assert!(
        orders.iter().any(|l| l.contains("unknown customer c4")),
        "{orders:#?}"
    );
}
