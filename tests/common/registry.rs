//! The schema registry of `scripts/test.sh` (Apicurio Registry, started by
//! `registry/registry.sh`) and the non-rill client that cross-checks the wire format
//! (Confluent's Python serializer, `registry/crosscheck.py`).

use std::process::Command;

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
pub(crate) fn crosscheck(url: &str, args: &[&str]) -> String {
    let python = std::env::var("RILL_TEST_CROSSCHECK_PYTHON").expect(
        "RILL_TEST_CROSSCHECK_PYTHON (scripts/test.sh sets it up with registry/crosscheck.sh)",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/registry/crosscheck.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .env("SCHEMA_REGISTRY_URL", url)
        .output()
        .expect("running the cross-check client");
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
