#!/usr/bin/env bash
# Kafka Streams baseline of the benchmark suite (contract: bench/BASELINES.md).
#
#   bench/kstreams/run.sh --scenario NAME --bootstrap HOST:PORT --events N --partitions P \
#                         --prefix PREFIX [--state-dir DIR] [--threads T] [--rate R]
#
# Builds target/rill-bench-kstreams.jar with Maven when it is missing or older than the sources
# (dependencies cached in ~/.m2; the build's output goes to stderr), then execs the JVM, so the
# suite measures the JVM's own /proc/<pid>. Environment: JAVA_HOME (java to use), KSTREAMS_HEAP
# (max heap, default 2g), KSTREAMS_JAVA_OPTS (extra JVM options).
set -euo pipefail

DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
JAR="$DIR/target/rill-bench-kstreams.jar"
JAVA="java"
[[ -n "${JAVA_HOME:-}" ]] && JAVA="$JAVA_HOME/bin/java"

stale() {
  [[ ! -f "$JAR" ]] && return 0
  [[ -n "$(find "$DIR/pom.xml" "$DIR/src" -newer "$JAR" -type f -print -quit)" ]]
}

if stale; then
  command -v mvn >/dev/null 2>&1 || { echo "run.sh: Maven (mvn) is needed to build $JAR" >&2; exit 1; }
  echo "run.sh: building $JAR" >&2
  (
    # A lock, in case the suite starts several runs at once.
    exec 9>"$DIR/.build.lock"
    command -v flock >/dev/null 2>&1 && flock -w 600 9
    if stale; then
      (cd "$DIR" && mvn -q -B package -DskipTests) >&2 \
        || { echo "run.sh: mvn package failed" >&2; exit 1; }
    fi
  )
fi

exec "$JAVA" -Xms256m -Xmx"${KSTREAMS_HEAP:-2g}" ${KSTREAMS_JAVA_OPTS:-} -jar "$JAR" "$@"
