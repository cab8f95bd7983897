use rill::prelude::*;

#[record]
struct View {
    #[record(timestamp)]
    created: f64,
    #[record(timestamp)]
    updated: f64,
}

fn main() {}
