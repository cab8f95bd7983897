use rill::prelude::*;

#[record]
struct View {
    #[record(timestamp)]
    when: String,
}

fn main() {}
