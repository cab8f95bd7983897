use rill::AvroSchema;

#[derive(serde::Serialize, AvroSchema)]
enum Kind {
    A,
}

#[derive(serde::Serialize, AvroSchema)]
struct Pair(i32, i32);

#[derive(serde::Serialize, AvroSchema)]
struct Big {
    id: u64,
    at: std::time::Duration,
}

#[derive(serde::Serialize, AvroSchema)]
struct Flat {
    #[serde(flatten)]
    inner: std::collections::HashMap<String, i32>,
}

fn main() {}
