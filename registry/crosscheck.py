#!/usr/bin/env python3
"""A non-rill client of the Confluent wire format, for rill's cross-check tests: Confluent's own
Python serializer and deserializer (confluent-kafka with fastavro), against a live registry.

  crosscheck.py encode TOPIC SCHEMA_JSON RECORD_JSON.. print each framed value (hex, one a line),
                                                      registering the schema under TOPIC-value
  crosscheck.py encode-referencing TOPIC REF_SUBJECT REF_SCHEMA REF_NAME SCHEMA RECORD_JSON..
                                                      the same with SCHEMA referencing REF_SCHEMA
                                                      (registered under REF_SUBJECT) as REF_NAME
  crosscheck.py decode TOPIC HEX                      print {"id": .., "value": ..} as JSON; the
                                                      writer schema is looked up by the frame's id
  crosscheck.py encode-json TOPIC SCHEMA RECORD       the same with JSON Schema (validated)
  crosscheck.py decode-json TOPIC HEX                 the same with JSON Schema (validated against
                                                      the schema of the frame's id)
  crosscheck.py encode-proto TOPIC PROTO MESSAGE RECORD_JSON
                                                      the same with Protocol Buffers: PROTO (a .proto
                                                      file) compiled with protoc, MESSAGE its message
  crosscheck.py decode-proto TOPIC PROTO MESSAGE HEX  the same, decoded

  crosscheck.py encode-key FORMAT TOPIC SCHEMA KEY_JSON..
                                                      print each framed key (hex, one a line) as
                                                      FORMAT (avro or json) writes it, registering
                                                      SCHEMA under TOPIC-key
  crosscheck.py decode-key FORMAT TOPIC HEX           print {"id": .., "value": ..} of a framed key

Environment: SCHEMA_REGISTRY_URL.
"""
import faulthandler
import json
import os
import struct
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer


def message_class(proto, message):
    """The Python class of MESSAGE in the .proto file PROTO, compiled with protoc (grpcio-tools)."""
    import importlib
    import tempfile

    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    folder, name = os.path.split(os.path.abspath(proto))
    status = protoc.main(["protoc", f"-I{folder}", f"--python_out={out}", name])
    assert status == 0, f"protoc failed on {proto}"
    sys.path.insert(0, out)
    module = importlib.import_module(name[: -len(".proto")] + "_pb2")
    return getattr(module, message)
from confluent_kafka.serialization import MessageField, SerializationContext


# Subjects are named after the topic (TOPIC-value, TOPIC-key), as rill's default strategy names
# them. The client's own default since 2.16 ("ASSOCIATED") first asks the registry for the
# topic's associations, an endpoint Apicurio does not serve (404); a CI run on 2026-12-06 failed
# on a client waiting for that answer. Naming the strategy leaves the request out.
TOPIC_SUBJECTS = {"subject.name.strategy": topic_subject_name_strategy}


def main():
    # A client stuck on the registry prints where it is stuck and fails, instead of hanging
    # the test that runs it.
    faulthandler.dump_traceback_later(45, exit=True)
    registry = SchemaRegistryClient({"url": os.environ["SCHEMA_REGISTRY_URL"]})
    command, topic = sys.argv[1], sys.argv[2]
    context = SerializationContext(topic, MessageField.VALUE)
    if command == "encode":
        conf = {"auto.register.schemas": True, **TOPIC_SUBJECTS}
        serializer = AvroSerializer(registry, sys.argv[3], conf=conf)
        for record in sys.argv[4:]:
            print(serializer(json.loads(record), context).hex())
    elif command == "encode-referencing":
        # TOPIC REF_SUBJECT REF_SCHEMA REF_NAME SCHEMA RECORD..: REF_SCHEMA registered under
        # REF_SUBJECT, SCHEMA under TOPIC-value referencing it as REF_NAME, records written
        # with SCHEMA (Confluent's serializer resolves the reference itself).
        from confluent_kafka.schema_registry import Schema, SchemaReference

        ref_subject, ref_schema, ref_name, schema_str = sys.argv[3:7]
        registry.register_schema(ref_subject, Schema(ref_schema, "AVRO"))
        version = registry.lookup_schema(ref_subject, Schema(ref_schema, "AVRO")).version
        schema = Schema(schema_str, "AVRO", [SchemaReference(ref_name, ref_subject, version)])
        registry.register_schema(f"{topic}-value", schema)
        conf = {"auto.register.schemas": False, "use.latest.version": True, **TOPIC_SUBJECTS}
        serializer = AvroSerializer(registry, schema, conf=conf)
        for record in sys.argv[7:]:
            print(serializer(json.loads(record), context).hex())
    elif command == "decode":
        framed = bytes.fromhex(sys.argv[3])
        assert framed[0] == 0, "not Confluent-framed"
        schema_id = struct.unpack(">I", framed[1:5])[0]
        value = AvroDeserializer(registry, conf=TOPIC_SUBJECTS)(framed, context)
        print(json.dumps({"id": schema_id, "value": value}))
    elif command == "encode-json":
        conf = {"auto.register.schemas": True, **TOPIC_SUBJECTS}
        serializer = JSONSerializer(sys.argv[3], registry, conf=conf)
        print(serializer(json.loads(sys.argv[4]), context).hex())
    elif command == "decode-json":
        framed = bytes.fromhex(sys.argv[3])
        assert framed[0] == 0, "not Confluent-framed"
        schema_id = struct.unpack(">I", framed[1:5])[0]
        deserializer = JSONDeserializer(
            None, conf=TOPIC_SUBJECTS, schema_registry_client=registry
        )
        print(json.dumps({"id": schema_id, "value": deserializer(framed, context)}))
    elif command in ("encode-proto", "decode-proto"):
        from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
        from google.protobuf import json_format

        cls = message_class(sys.argv[3], sys.argv[4])
        if command == "encode-proto":
            conf = {
                "auto.register.schemas": True,
                "use.deprecated.format": False,
                **TOPIC_SUBJECTS,
            }
            serializer = ProtobufSerializer(cls, registry, conf)
            message = json_format.ParseDict(json.loads(sys.argv[5]), cls())
            print(serializer(message, context).hex())
        else:
            framed = bytes.fromhex(sys.argv[5])
            assert framed[0] == 0, "not Confluent-framed"
            schema_id = struct.unpack(">I", framed[1:5])[0]
            conf = {"use.deprecated.format": False, **TOPIC_SUBJECTS}
            deserializer = ProtobufDeserializer(cls, conf)
            message = deserializer(framed, context)
            value = json_format.MessageToDict(message, preserving_proto_field_name=True)
            print(json.dumps({"id": schema_id, "value": value}))
    elif command in ("encode-key", "decode-key"):
        # FORMAT TOPIC ..: the key side of the topic (subject TOPIC-key).
        fmt, topic = sys.argv[2], sys.argv[3]
        key_context = SerializationContext(topic, MessageField.KEY)
        if command == "encode-key":
            conf = {"auto.register.schemas": True, **TOPIC_SUBJECTS}
            if fmt == "avro":
                serializer = AvroSerializer(registry, sys.argv[4], conf=conf)
            else:
                serializer = JSONSerializer(sys.argv[4], registry, conf=conf)
            for key in sys.argv[5:]:
                print(serializer(json.loads(key), key_context).hex())
        else:
            framed = bytes.fromhex(sys.argv[4])
            assert framed[0] == 0, "not Confluent-framed"
            schema_id = struct.unpack(">I", framed[1:5])[0]
            if fmt == "avro":
                deserializer = AvroDeserializer(registry, conf=TOPIC_SUBJECTS)
            else:
                deserializer = JSONDeserializer(
                    None, conf=TOPIC_SUBJECTS, schema_registry_client=registry
                )
            print(json.dumps({"id": schema_id, "value": deserializer(framed, key_context)}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
