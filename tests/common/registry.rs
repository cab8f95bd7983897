//! The schema registry of `scripts/test.sh` (Apicurio Registry, started by
//! `registry/registry.sh`) and the non-rill client that cross-checks the wire format
//! (Confluent's Python serializer, `registry/crosscheck.py`).

use std::process::Command;

use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const HERE: &str = "tests/common/registry.rs";

/// A page view in Avro, keyed by user (the registry tests' input).
#[record(codec = "avro")]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    #[record(key)]
    pub(crate) user: String,
    pub(crate) url: String,
    pub(crate) at: i64,
}

/// A view seen, in Avro (the registry tests' output).
#[record(codec = "avro")]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Visit {
    pub(crate) user: String,
    pub(crate) url: String,
    pub(crate) seen: i64,
}

/// The text of `R`'s registry schema.
pub(crate) fn schema_of<R: Record>() -> &'static str {
    &R::registry_schema().expect("a registry record").text
}

/// Reads views from `input`, writes a visit per view to `output`.
pub(crate) fn visits(input: &str, output: &str) -> AgentSpec {
    AgentSpec::new("visits", HERE)
        .source(TopicSpec::of::<View>(input, HERE))
        .sink(TopicSpec::of::<Visit>(output, HERE))
        .run(|mut ctx| async move {
            let mut views = ctx.stream::<View>()?;
            let out = ctx.sink::<Visit>()?;
            while let Some(v) = views.next().await {
                let visit = Visit {
                    user: v.user.clone(),
                    url: v.url.clone(),
                    seen: v.at,
                };
                out.send(&visit).await?;
            }
            Ok(())
        })
}

/// The registry's URL, or `None` (the test says it was skipped) unless
/// `RILL_REQUIRE_REGISTRY=1`, where a missing registry fails the test.
pub(crate) fn registry_url() -> Option<String> {
    match std::env::var("RILL_TEST_SCHEMA_REGISTRY") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("RILL_REQUIRE_REGISTRY").as_deref() != Ok("1"),
                "RILL_REQUIRE_REGISTRY=1 but RILL_TEST_SCHEMA_REGISTRY is not set; run scripts/test.sh"
            );
            eprintln!(
                "skipped: no schema registry (RILL_TEST_SCHEMA_REGISTRY); scripts/test.sh starts one"
            );
            None
        }
    }
}

/// Runs `registry/crosscheck.py` with `args` against the registry at `url`; its stdout.
///
/// A client that stalls dumps its stack and exits after 45 s (its `faulthandler`); it is run
/// once more, since its requests are idempotent, and the stack stays in the test's output.
pub(crate) fn crosscheck(url: &str, args: &[&str]) -> String {
    let python = std::env::var("RILL_TEST_CROSSCHECK_PYTHON").expect(
        "RILL_TEST_CROSSCHECK_PYTHON (scripts/test.sh sets it up with registry/crosscheck.sh)",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/registry/crosscheck.py");
    let run = || {
        Command::new(&python)
            .arg(script)
            .args(args)
            .env("SCHEMA_REGISTRY_URL", url)
            .output()
            .expect("running the cross-check client")
    };
    let mut out = run();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() && stderr.contains("Timeout (0:00:45)") {
        eprintln!("crosscheck.py {args:?} stalled; running it again. Its stack:\n{stderr}");
        report_registry(url);
        out = run();
    }
    assert!(
        out.status.success(),
        "crosscheck.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// What the registry at `url` is doing (`registry.sh report`: a request's time now, its logs'
/// tails), printed into the test's output when a client waited on it.
fn report_registry(url: &str) {
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/registry/registry.sh");
    let report = Command::new("bash")
        .args([script, "report"])
        .env("RILL_TEST_REGISTRY_PORT", port.unwrap_or_default())
        .output();
    match report {
        Ok(out) => eprintln!("{}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("registry.sh report did not run: {e}"),
    }
}

/// A TCP relay in front of the registry, on a thread and runtime of its own (so it serves while
/// a test's runtime blocks): while `down`, it drops every connection it accepts, as a registry
/// that went away would.
pub(crate) struct Relay {
    url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// A relay to the registry at `url` (`http://host:port/path`).
    pub(crate) fn to(url: &str) -> Relay {
        use std::sync::atomic::Ordering;
        let rest = url
            .strip_prefix("http://")
            .expect("an http:// registry URL");
        let (target, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let target = target.to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let serving = up.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !serving.load(Ordering::Acquire) {
                        continue;
                    }
                    let target = target.clone();
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
        });
        Relay {
            url: format!("http://127.0.0.1:{port}{path}"),
            up,
        }
    }

    /// The registry's URL through the relay.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Drops connections from now on (`false`) or relays them again (`true`).
    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Release);
    }
}
