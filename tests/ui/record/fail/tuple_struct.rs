use rill::prelude::*;

#[record]
struct Pair(String, u32);

fn main() {}
