use rill::record;

// A field without an Avro schema: the error points at its type.
#[record(codec = "avro")]
struct Counter {
    name: String,
    total: u64,
}

// `schema` belongs to a registry codec.
#[record(schema = "schemas/x.avsc")]
struct Plain {
    name: String,
}

// A codec rill does not have.
#[record(codec = "protobuff")]
struct Typo {
    name: String,
}

// A protobuf record without its .proto.
#[record(codec = "protobuf")]
struct NoProto {
    name: String,
}

fn main() {}
