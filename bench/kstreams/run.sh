#!/usr/bin/env bash
# Kafka Streams baseline of the benchmark suite (contract: bench/BASELINES.md).
#
#   bench/kstreams/run.sh --scenario NAME --bootstrap HOST:PORT --events N --partitions P \
#                         --prefix PREFIX [--state-dir DIR] [--threads T] [--rate R]
#
# Builds target/rill-bench-kstreams.jar when it is missing or older than the sources (build.sh:
# Maven, dependencies cached in ~/.m2, output on stderr), then execs the JVM, so the
# suite measures the JVM's own /proc/<pid>. Environment: JAVA_HOME (java to use), KSTREAMS_HEAP
# (max heap, default 2g), KSTREAMS_JAVA_OPTS (extra JVM options).
set -euo pipefail

DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
JAR="$DIR/target/rill-bench-kstreams.jar"
JAVA="java"
[[ -n "${JAVA_HOME:-}" ]] && JAVA="$JAVA_HOME/bin/java"

"$DIR/build.sh"

exec "$JAVA" -Xms256m -Xmx"${KSTREAMS_HEAP:-2g}" ${KSTREAMS_JAVA_OPTS:-} -jar "$JAR" "$@"
