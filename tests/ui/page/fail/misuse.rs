use rill::prelude::*;

#[page("count")]
async fn no_slash() -> String {
    String::new()
}

#[page("/a", method = "fetch")]
async fn bad_method() -> String {
    String::new()
}

#[page(method = "get")]
async fn no_path() -> String {
    String::new()
}

#[page("/b")]
fn not_async() -> String {
    String::new()
}

#[page("/c", tables(totals = "t"))]
async fn unbound(other: TableReader<String, u64>) -> String {
    format!("{}", other.get(&String::new()).is_ok())
}

fn main() {}
