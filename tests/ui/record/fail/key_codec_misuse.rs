use rill::prelude::*;

// A registry key without a key field.
#[record(codec = "avro", key_codec = "avro")]
struct NoKey {
    user: String,
}

// Protobuf keys are messages.
#[record(codec = "avro", key_codec = "protobuf")]
struct ProtoKey {
    #[record(key)]
    user: String,
}

// Registry keys go with registry values.
#[record(key_codec = "avro")]
struct JsonValue {
    #[record(key)]
    user: String,
}

// A key type that is not one of Avro's primitive types.
#[record(codec = "avro", key_codec = "avro")]
struct ShortKey {
    #[record(key)]
    id: u32,
}

fn main() {}
