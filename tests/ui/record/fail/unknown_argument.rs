use rill::prelude::*;

#[record(codec = "json", compress = true)]
struct View {
    #[record(primary)]
    url: String,
}

#[record(codec = "xml")]
struct Other {
    url: String,
}

fn main() {}
