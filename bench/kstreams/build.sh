#!/usr/bin/env bash
# Builds target/rill-bench-kstreams.jar with Maven when it is missing or older than the sources
# (dependencies cached in ~/.m2; the build's output goes to stderr). Used by run.sh and by the
# differential window test (tests/window_differential.rs), which may run several at once: the
# build holds a lock, and whoever waited for it finds the jar fresh.
set -euo pipefail

DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
JAR="$DIR/target/rill-bench-kstreams.jar"

stale() {
  [[ ! -f "$JAR" ]] && return 0
  [[ -n "$(find "$DIR/pom.xml" "$DIR/src" -newer "$JAR" -type f -print -quit)" ]]
}

if stale; then
  command -v mvn >/dev/null 2>&1 || { echo "build.sh: Maven (mvn) is needed to build $JAR" >&2; exit 1; }
  exec 9>"$DIR/.build.lock"
  command -v flock >/dev/null 2>&1 && flock -w 600 9
  if stale; then
    echo "build.sh: building $JAR" >&2
    (cd "$DIR" && mvn -q -B package -DskipTests) >&2 \
      || { echo "build.sh: mvn package failed" >&2; exit 1; }
  fi
fi
