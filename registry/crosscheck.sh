#!/usr/bin/env bash
# The cross-check client's Python environment: `crosscheck.sh setup` creates (once) a venv
# with Confluent's Python client and prints CROSSCHECK_PYTHON=<its python>; any other
# arguments run registry/crosscheck.py with it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${RILL_TEST_CROSSCHECK_VENV:-${HOME:-/tmp}/.cache/rill/crosscheck-venv}"
# Pinned, so that a new client release cannot change what the tests cross-check against
# (2.16 changed the default subject name strategy); RILL_TEST_CONFLUENT_KAFKA picks another.
version="${RILL_TEST_CONFLUENT_KAFKA:-2.16.1}"
log() { printf 'crosscheck.sh: %s\n' "$*" >&2; }
setup() {
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sys, confluent_kafka, fastavro, jsonschema, referencing, grpc_tools, google.protobuf; from importlib.metadata import version as v; sys.exit(v('confluent-kafka') != '$version')" 2>/dev/null; then
    command -v python3 >/dev/null || { log "python3 is required (Debian: python3 python3-venv)"; exit 1; }
    log "installing confluent-kafka $version, fastavro, jsonschema and protobuf (with protoc) into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "confluent-kafka[avro,json,protobuf,schemaregistry]==$version" fastavro jsonschema referencing protobuf grpcio-tools >&2
  fi
  echo "CROSSCHECK_PYTHON=$venv/bin/python"
}
case "${1:-}" in
  setup) setup ;;
  *) line="$(setup)"; exec "${line#CROSSCHECK_PYTHON=}" "$here/crosscheck.py" "$@" ;;
esac
