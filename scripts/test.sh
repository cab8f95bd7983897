#!/usr/bin/env bash
# The whole test suite: starts a real Apache Kafka broker and a real schema registry (both
# fetched from Maven Central on first use and cached), runs every test of the workspace
# against them, and stops them.
#
#   scripts/test.sh                 # everything, then the broker tests again on a broker
#                                   # configured as Apache Kafka ships (kafka/broker.sh's
#                                   # `defaults` profile)
#   scripts/test.sh --test cli      # extra arguments go to `cargo test` (strict broker only)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs); rust-toolchain.toml picks the version"
command -v cc >/dev/null || die "no C compiler: librdkafka is built from source; install build-essential (Debian/Ubuntu) or your platform's C toolchain"
pkg-config --exists openssl 2>/dev/null || die "no OpenSSL headers: librdkafka's TLS and SASL link the system's OpenSSL; install libssl-dev and pkg-config (Debian/Ubuntu)"

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RILL_TEST_BROKER_PORT="${RILL_TEST_BROKER_PORT:-19092}"

# A second broker, configured as Apache Kafka ships (topics auto-created on first use, 3
# partitions by default), for the broker tests of windows, joins, tables, group_by and rill's
# own topics: a setting only the strict broker has must not be what makes them pass.
DEFAULTS_PORT="${RILL_TEST_DEFAULTS_BROKER_PORT:-19492}"
DEFAULTS_TESTS=(--test kafka_windows --test kafka_joins --test kafka_tables --test kafka_topics --test kafka_timers --test kafka_ktable)
# A second schema registry, secured (HTTPS with a test CA, HTTP basic authentication), on a
# port of its own (and a run dir of its own), for tests/schema_secured.rs.
SECURE_REGISTRY_PORT="${RILL_TEST_SECURE_REGISTRY_PORT:-18083}"
secure_registry() {
  RILL_TEST_REGISTRY_PORT=$SECURE_REGISTRY_PORT RILL_TEST_REGISTRY_SECURE=1 \
    RILL_TEST_REGISTRY_DIR="${RILL_TEST_REGISTRY_DIR:+$RILL_TEST_REGISTRY_DIR-secure}" \
    bash registry/registry.sh "$@"
}

# The tests expect empty brokers (the example tests use fixed topic names such as
# `pageviews`): `start` would reuse a broker an earlier run left up, data and all, so stop
# (which deletes its data) first.
bash kafka/broker.sh stop
RILL_TEST_BROKER_PORT=$DEFAULTS_PORT bash kafka/broker.sh stop
bash registry/registry.sh stop
secure_registry stop
line="$(bash kafka/broker.sh start)"
# On failure the registries report first (a request's time now, their logs' tails): a test
# that waited on a registry shows what the registry was doing.
stop_all() {
  local status=$?
  if [ "$status" -ne 0 ]; then bash registry/registry.sh report; secure_registry report; fi
  bash kafka/broker.sh stop; RILL_TEST_BROKER_PORT=$DEFAULTS_PORT bash kafka/broker.sh stop
  bash registry/registry.sh stop; secure_registry stop
}
trap stop_all EXIT
export RILL_TEST_KAFKA="${line#KAFKA_BOOTSTRAP=}"
export RILL_REQUIRE_KAFKA=1
# A real schema registry (Apicurio Registry, fetched from Maven Central and cached) and
# Confluent's Python client for the wire-format cross-checks (a venv from PyPI, cached).
line="$(bash registry/registry.sh start)"
export RILL_TEST_SCHEMA_REGISTRY="${line#SCHEMA_REGISTRY_URL=}"
export RILL_REQUIRE_REGISTRY=1
lines="$(secure_registry start)"
RILL_TEST_SECURE_REGISTRY="$(sed -n 's/^SCHEMA_REGISTRY_URL=//p' <<<"$lines")"
RILL_TEST_SECURE_REGISTRY_CA="$(sed -n 's/^SCHEMA_REGISTRY_CA=//p' <<<"$lines")"
RILL_TEST_SECURE_REGISTRY_AUTH="$(sed -n 's/^SCHEMA_REGISTRY_BASIC_AUTH=//p' <<<"$lines")"
export RILL_TEST_SECURE_REGISTRY RILL_TEST_SECURE_REGISTRY_CA RILL_TEST_SECURE_REGISTRY_AUTH
line="$(bash registry/crosscheck.sh setup)"
export RILL_TEST_CROSSCHECK_PYTHON="${line#CROSSCHECK_PYTHON=}"
# In CI the web tests' tools (chromium, promtool; .ci/run installs them) must be there: a
# missing one fails instead of skipping.
if [ -n "${CI:-}" ]; then export RILL_REQUIRE_TOOLS=1; fi
echo "test.sh: Kafka broker at $RILL_TEST_KAFKA (strict profile)" >&2

cargo test --workspace "$@"

# With arguments, only what they select runs, on the strict broker.
if [ $# -eq 0 ]; then
  bash kafka/broker.sh stop
  export RILL_TEST_BROKER_PROFILE=defaults
  line="$(RILL_TEST_BROKER_PORT=$DEFAULTS_PORT bash kafka/broker.sh start)"
  export RILL_TEST_KAFKA="${line#KAFKA_BOOTSTRAP=}"
  echo "test.sh: Kafka broker at $RILL_TEST_KAFKA (Apache Kafka's defaults profile)" >&2
  cargo test "${DEFAULTS_TESTS[@]}"
fi
