//! Compile-time behaviour of `#[record]`, `#[agent]`, `#[window_state]`, `#[timer]`,
//! `#[crontab]`, `#[page]` and `#[derive(AvroSchema)]`: every supported form compiles, every
//! misuse is an error pointing at the culprit (the `.stderr` files are the expected messages).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/record/pass/*.rs");
    t.compile_fail("tests/ui/record/fail/*.rs");
    t.pass("tests/ui/agent/pass/*.rs");
    t.compile_fail("tests/ui/agent/fail/*.rs");
    t.pass("tests/ui/window_state/pass/*.rs");
    t.compile_fail("tests/ui/window_state/fail/*.rs");
    t.pass("tests/ui/timer/pass/*.rs");
    t.compile_fail("tests/ui/timer/fail/*.rs");
    t.compile_fail("tests/ui/page/fail/*.rs");
    t.compile_fail("tests/ui/avro/fail/*.rs");
}
