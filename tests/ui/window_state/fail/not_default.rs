use rill::prelude::*;

#[window_state]
#[derive(Clone)]
struct Visits {
    views: u64,
}

fn main() {}
