#!/usr/bin/env python3
"""A non-rill client of the Confluent wire format, for rill's cross-check tests: Confluent's own
Python serializer and deserializer (confluent-kafka with fastavro), against a live registry.

  crosscheck.py encode TOPIC SCHEMA_JSON RECORD_JSON   print the framed value (hex), registering
                                                      the schema under TOPIC-value
  crosscheck.py decode TOPIC HEX                      print {"id": .., "value": ..} as JSON; the
                                                      writer schema is looked up by the frame's id
  crosscheck.py encode-json TOPIC SCHEMA RECORD       the same with JSON Schema (validated)
  crosscheck.py decode-json TOPIC HEX                 the same with JSON Schema (validated against
                                                      the schema of the frame's id)

Environment: SCHEMA_REGISTRY_URL.
"""
import json
import os
import struct
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    registry = SchemaRegistryClient({"url": os.environ["SCHEMA_REGISTRY_URL"]})
    command, topic = sys.argv[1], sys.argv[2]
    context = SerializationContext(topic, MessageField.VALUE)
    if command == "encode":
        serializer = AvroSerializer(registry, sys.argv[3], conf={"auto.register.schemas": True})
        print(serializer(json.loads(sys.argv[4]), context).hex())
    elif command == "decode":
        framed = bytes.fromhex(sys.argv[3])
        assert framed[0] == 0, "not Confluent-framed"
        schema_id = struct.unpack(">I", framed[1:5])[0]
        print(json.dumps({"id": schema_id, "value": AvroDeserializer(registry)(framed, context)}))
    elif command == "encode-json":
        serializer = JSONSerializer(sys.argv[3], registry, conf={"auto.register.schemas": True})
        print(serializer(json.loads(sys.argv[4]), context).hex())
    elif command == "decode-json":
        framed = bytes.fromhex(sys.argv[3])
        assert framed[0] == 0, "not Confluent-framed"
        schema_id = struct.unpack(">I", framed[1:5])[0]
        deserializer = JSONDeserializer(None, schema_registry_client=registry)
        print(json.dumps({"id": schema_id, "value": deserializer(framed, context)}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
