use rill::prelude::*;

#[window_state(codec = "json")]
#[derive(Default, Clone)]
struct WithArgs {
    views: u64,
}

#[window_state]
fn not_a_type() {}

fn main() {}
