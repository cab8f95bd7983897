use rill::prelude::*;

#[record]
enum Event {
    Click,
}

fn main() {}
