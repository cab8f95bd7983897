#!/usr/bin/env bash
# Fetch, start and stop a real single-node Apache Kafka 4.x broker (KRaft,
# combined broker+controller) on 127.0.0.1 for rill's tests and CI.
#
#   kafka/broker.sh fetch      download the broker jars (once) into the cache
#   kafka/broker.sh start      start the broker (if not running) and print
#                              KAFKA_BOOTSTRAP=127.0.0.1:<port> on stdout
#   kafka/broker.sh stop       SIGTERM (SIGKILL after 20 s), remove the run dir
#   kafka/broker.sh kill       SIGKILL now, keep the data (for crash tests)
#   kafka/broker.sh status     exit 0 if running (prints the bootstrap line)
#   kafka/broker.sh classpath  print the classpath of the Kafka jars
#   kafka/broker.sh tool CLASS ARGS...
#                              run a Kafka CLI class, e.g.
#                              tool org.apache.kafka.tools.TopicCommand --list \
#                                   --bootstrap-server 127.0.0.1:19092
#
# Environment (all optional):
#   RILL_TEST_BROKER_PORT           broker port (default 19092); controller = port+1
#   RILL_TEST_BROKER_DIR            run dir (default /tmp/rill-kafka-$PORT)
#   RILL_TEST_BROKER_CACHE          jar cache (default ~/.cache/rill/kafka-<version>)
#   RILL_TEST_BROKER_KEEP=1         `stop` keeps the run dir
#   RILL_TEST_BROKER_HEAP           broker max heap (default 1g)
#   RILL_TEST_BROKER_START_TIMEOUT  seconds to wait for the broker (default 60)
#   RILL_TEST_BROKER_EXTRA_PROPS    extra server.properties lines (newline separated)
#   RILL_TEST_BROKER_PROFILE        `strict` (default): topics are never auto-created,
#                                   num.partitions=1; `defaults`: as Apache Kafka ships,
#                                   auto.create.topics.enable=true, num.partitions=3 (neither
#                                   rill's 8 nor Kafka's 1), group.initial.rebalance.delay.ms=3000
#   RILL_TEST_BROKER_SECURE=1       also listen with TLS and SASL (for the security tests):
#                                   SSL on port+2 requiring a client certificate (mutual TLS),
#                                   SASL_SSL on port+3 with the SCRAM-SHA-512 user
#                                   `rill` / `rill-secret`; certificates generated with
#                                   openssl under <run dir>/tls: ca.pem (the CA clients
#                                   trust), client.pem + client.key (signed by it),
#                                   other-ca.pem (a CA that signed nothing of this broker).
#                                   PLAINTEXT on the port stays for plain clients.
#   JAVA_HOME                 use $JAVA_HOME/bin/java instead of `java`
#
# Only `start`/`status` print on stdout (the KAFKA_BOOTSTRAP line); all
# diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
POM="$SCRIPT_DIR/pom.xml"

log() { printf 'broker.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f "$POM" ]] || die "missing $POM"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
[[ -n "$KAFKA_VERSION" ]] || die "cannot read <kafka.version> from $POM"

PORT="${RILL_TEST_BROKER_PORT:-19092}"
[[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT > 0 && PORT < 65535 )) || die "bad RILL_TEST_BROKER_PORT=$PORT"
CPORT=$((PORT + 1))
HOST=127.0.0.1
BOOTSTRAP="$HOST:$PORT"
RUN_DIR="${RILL_TEST_BROKER_DIR:-/tmp/rill-kafka-$PORT}"
CACHE="${RILL_TEST_BROKER_CACHE:-${HOME:-/tmp}/.cache/rill/kafka-$KAFKA_VERSION}"
LIBS="$CACHE/libs"
MARKER="$CACHE/.complete"
HEAP="${RILL_TEST_BROKER_HEAP:-1g}"
PROFILE="${RILL_TEST_BROKER_PROFILE:-strict}"
case "$PROFILE" in
  strict)   AUTO_CREATE=false; NUM_PARTITIONS=1; REBALANCE_DELAY=0 ;;
  defaults) AUTO_CREATE=true;  NUM_PARTITIONS=3; REBALANCE_DELAY=3000 ;;
  *) die "bad RILL_TEST_BROKER_PROFILE=$PROFILE (strict or defaults)" ;;
esac
START_TIMEOUT="${RILL_TEST_BROKER_START_TIMEOUT:-60}"
SECURE="${RILL_TEST_BROKER_SECURE:-0}"
SSL_PORT=$((PORT + 2))
SASL_PORT=$((PORT + 3))
SCRAM_USER=rill
SCRAM_PASSWORD=rill-secret
PID_FILE="$RUN_DIR/kafka.pid"
SERVER_LOG="$RUN_DIR/server.log"
DATA_DIR="$RUN_DIR/data"

# ---------------------------------------------------------------- locking --
# Serialise concurrent invocations (parallel test binaries may all call
# `start`).  The lock files live beside, not inside, the directories so that
# `stop` can remove the run dir while holding the lock.
with_lock() { # with_lock FILE CMD...
  local file="$1"; shift
  if command -v flock >/dev/null 2>&1; then
    mkdir -p "$(dirname -- "$file")"
    (
      flock -w 300 9 || die "timed out waiting for lock $file"
      "$@"
    ) 9>"$file"
  else
    "$@"
  fi
}

# ------------------------------------------------------------ prerequisites --
JAVA=""

java_major() { # java_major JAVA_BIN -> prints major version (8, 11, 17, ...)
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)" || true
  [[ -n "$v" ]] || { echo 0; return; }
  if [[ "$v" == 1.* ]]; then v="${v#1.}"; fi
  echo "${v%%[.+-]*}"
}

find_java() { # sets JAVA to a java >= 17, returns 1 if none
  local c m
  local candidates=()
  [[ -n "${JAVA_HOME:-}" ]] && candidates+=("$JAVA_HOME/bin/java")
  command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
  for c in /usr/lib/jvm/*/bin/java; do [[ -x "$c" ]] && candidates+=("$c"); done
  for c in "${candidates[@]}"; do
    [[ -x "$c" ]] || continue
    m="$(java_major "$c")"
    if [[ "$m" =~ ^[0-9]+$ ]] && (( m >= 17 )); then JAVA="$c"; return 0; fi
  done
  return 1
}

can_apt() { [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; }

apt_updated=0
apt_install() { # apt_install PKG... (first one that exists wins per call)
  if (( apt_updated == 0 )); then
    log "running apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    apt_updated=1
  fi
  local p
  for p in "$@"; do
    log "installing $p with apt-get"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >&2; then
      return 0
    fi
  done
  return 1
}

ensure_java() {
  [[ -n "$JAVA" ]] && return 0
  find_java && return 0
  if can_apt; then
    apt_install openjdk-17-jre-headless default-jre-headless || true
    find_java && return 0
  fi
  die "Java 17 or newer is required (not found on PATH, in JAVA_HOME or /usr/lib/jvm).
  Install it, e.g. on Debian/Ubuntu:  apt-get install openjdk-17-jre-headless"
}

ensure_mvn() {
  command -v mvn >/dev/null 2>&1 && return 0
  if can_apt; then
    apt_install maven || true
    command -v mvn >/dev/null 2>&1 && return 0
  fi
  die "Apache Maven (mvn) is required to download the Kafka jars.
  Install it, e.g. on Debian/Ubuntu:  apt-get install maven"
}

# ------------------------------------------------------------------- fetch --
pom_sum() { cksum < "$POM" | awk '{print $1 "-" $2}'; }

fetched() { [[ -f "$MARKER" && "$(cat "$MARKER" 2>/dev/null)" == "$(pom_sum)" && -d "$LIBS" ]]; }

do_fetch_locked() {
  fetched && return 0
  ensure_java
  ensure_mvn
  log "downloading Kafka $KAFKA_VERSION jars into $LIBS"
  mkdir -p "$CACHE"
  rm -rf "$CACHE/libs.tmp" "$CACHE/build"
  mkdir -p "$CACHE/build"
  # Run Maven on a copy of the pom so that nothing is written into the repo.
  cp "$POM" "$CACHE/build/pom.xml"
  local mvn_java_home
  mvn_java_home="$(dirname -- "$(dirname -- "$(readlink -f "$JAVA")")")"
  if ! (cd "$CACHE/build" && JAVA_HOME="${JAVA_HOME:-$mvn_java_home}" \
        mvn -q -B dependency:copy-dependencies \
          -DoutputDirectory="$CACHE/libs.tmp" -DincludeScope=runtime 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2); then
    rm -rf "$CACHE/libs.tmp"
    die "mvn dependency:copy-dependencies failed (is Maven Central reachable?)"
  fi
  ls "$CACHE/libs.tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 \
    || die "download incomplete: kafka_2.13-$KAFKA_VERSION.jar missing"
  rm -rf "$LIBS"
  mv "$CACHE/libs.tmp" "$LIBS"
  rm -rf "$CACHE/build"
  pom_sum > "$MARKER"
  log "fetched $(ls "$LIBS" | wc -l) jars ($(du -sh "$LIBS" | cut -f1))"
}

do_fetch() {
  if fetched; then ensure_java; return 0; fi
  with_lock "$CACHE.lock" do_fetch_locked
  ensure_java
}

# ---------------------------------------------------------------- helpers --
# Log4j2 configs: the broker logs INFO to stdout (redirected to server.log);
# tools log WARN to stderr so their stdout stays clean.
write_log4j_configs() {
  cat > "$RUN_DIR/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

tools_log4j_config() {
  local f="$CACHE/tools-log4j2.properties"
  if [[ ! -f "$f" ]]; then
    mkdir -p "$CACHE"
    cat > "$f.tmp.$$" <<'EOF'
status = error
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
    mv -f "$f.tmp.$$" "$f"
  fi
  echo "$f"
}

run_tool() { # run_tool CLASS ARGS...
  "$JAVA" -Xmx512m -cp "$LIBS/*" \
    -Dlog4j2.configurationFile="$(tools_log4j_config)" "$@"
}

# A CA, the broker's certificate (for 127.0.0.1 and localhost) in a PKCS12 keystore, a
# client certificate for mutual TLS, and a second CA that signed none of them.
write_tls_material() {
  local dir="$RUN_DIR/tls"
  [[ -f "$dir/server.p12" ]] && return 0
  command -v openssl >/dev/null || die "RILL_TEST_BROKER_SECURE=1 needs openssl"
  mkdir -p "$dir"
  (
    cd "$dir"
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rill test $ca" \
        -keyout "$ca.key" -out "$ca.pem" 2>/dev/null
    done
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
    for who in server client; do
      openssl req -newkey rsa:2048 -nodes -subj "/CN=rill test $who" \
        -keyout "$who.key" -out "$who.csr" 2>/dev/null
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
        -extfile san.ext -out "$who.pem" 2>/dev/null
    done
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem \
      -name broker -out server.p12 -passout pass:changeit
  ) || die "generating TLS certificates in $dir failed"
  log "TLS certificates in $dir"
}

# The TLS and SASL_SSL listeners' settings (RILL_TEST_BROKER_SECURE=1).
secure_properties() {
  local dir="$RUN_DIR/tls"
  cat <<EOF
# RILL_TEST_BROKER_SECURE=1: SSL (mutual TLS) on $SSL_PORT, SASL_SSL (SCRAM-SHA-512) on $SASL_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT,SSL://$HOST:$SSL_PORT,SASL_SSL://$HOST:$SASL_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,SSL://$HOST:$SSL_PORT,SASL_SSL://$HOST:$SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/server.p12
ssl.keystore.password=changeit
ssl.truststore.type=PEM
ssl.truststore.location=$dir/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
}

write_server_properties() {
  cat > "$RUN_DIR/server.properties.tmp" <<EOF
# Generated by kafka/broker.sh -- single-node KRaft broker for rill tests ($PROFILE profile).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CPORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=$NUM_PARTITIONS
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=$REBALANCE_DELAY
auto.create.topics.enable=$AUTO_CREATE
delete.topic.enable=true
# After a SIGKILL the restarted node must wait for its previous broker session
# to expire before it can re-register (default 9 s); keep that short.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
EOF
  if [[ "$SECURE" == 1 ]]; then
    write_tls_material
    secure_properties >> "$RUN_DIR/server.properties.tmp"
  fi
  if [[ -n "${RILL_TEST_BROKER_EXTRA_PROPS:-}" ]]; then
    printf '# RILL_TEST_BROKER_EXTRA_PROPS\n%s\n' "$RILL_TEST_BROKER_EXTRA_PROPS" >> "$RUN_DIR/server.properties.tmp"
  fi
  mv -f "$RUN_DIR/server.properties.tmp" "$RUN_DIR/server.properties"
}

read_pid() { [[ -f "$PID_FILE" ]] && cat "$PID_FILE" 2>/dev/null || true; }

# True if PID is alive and is our broker (guards against pid reuse).
is_broker_pid() {
  local pid="$1"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  is_alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  fi
  return 0
}

running_pid() { local pid; pid="$(read_pid)"; is_broker_pid "$pid" && echo "$pid"; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A killed broker is reparented to init, which may reap it late: count a
# zombie as dead.
is_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state=""
  [[ -r "/proc/$1/stat" ]] && state="$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != Z && "$state" != X ]]
}

wait_dead() { # wait_dead PID SECONDS -> 0 if dead in time
  local pid="$1" deadline=$((SECONDS + $2))
  while is_alive "$pid"; do
    (( SECONDS >= deadline )) && return 1
    sleep 0.1
  done
  return 0
}

# ------------------------------------------------------------------ start --
do_start_locked() {
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid)"
    echo "KAFKA_BOOTSTRAP=$BOOTSTRAP"
    return 0
  fi
  rm -f "$PID_FILE"
  local ports=("$PORT" "$CPORT")
  [[ "$SECURE" == 1 ]] && ports+=("$SSL_PORT" "$SASL_PORT")
  for p in "${ports[@]}"; do
    port_open "$p" && die "port $HOST:$p is already in use by another process"
  done

  do_fetch
  mkdir -p "$RUN_DIR"
  write_server_properties
  write_log4j_configs

  if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
    rm -rf "$DATA_DIR"
    local cluster_id
    cluster_id="$(run_tool kafka.tools.StorageTool random-uuid | tail -n1)"
    [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing"
    log "formatting KRaft storage in $DATA_DIR (cluster id $cluster_id)"
    local scram=()
    [[ "$SECURE" == 1 ]] && scram=(--add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]")
    run_tool kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$RUN_DIR/server.properties" "${scram[@]}" >&2 || die "StorageTool format failed"
  else
    log "reusing existing data in $DATA_DIR"
  fi

  [[ -f "$SERVER_LOG" ]] && mv -f "$SERVER_LOG" "$SERVER_LOG.prev"
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $HOST:$CPORT), log $SERVER_LOG"
  # setsid: own session, so the broker outlives the caller and is not hit by
  # the caller's Ctrl-C.  In a non-interactive shell the background child is
  # not a group leader, so setsid execs in place and $! is the JVM's pid.
  local launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  (
    cd "$RUN_DIR"
    exec 9>&-  # do not let the broker inherit (and hold) the run-dir lock
    exec "${launcher[@]}" "$JAVA" -Xmx"$HEAP" -Xms256m \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$RUN_DIR/log4j2.properties" \
      -cp "$LIBS/*" kafka.Kafka "$RUN_DIR/server.properties" \
      </dev/null >>"$SERVER_LOG" 2>&1
  ) &
  pid=$!
  echo "$pid" > "$PID_FILE"

  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! is_alive "$pid"; then
      rm -f "$PID_FILE"
      log "broker exited during startup; last lines of $SERVER_LOG:"
      tail -n 40 "$SERVER_LOG" >&2 || true
      exit 1
    fi
    if grep -q 'Kafka Server started' "$SERVER_LOG" 2>/dev/null && port_open "$PORT"; then
      break
    fi
    if (( SECONDS >= deadline )); then
      log "broker not ready after ${START_TIMEOUT}s; last lines of $SERVER_LOG:"
      tail -n 40 "$SERVER_LOG" >&2 || true
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$PID_FILE"
      exit 1
    fi
    sleep 0.2
  done
  log "ready (pid $pid)"
  echo "KAFKA_BOOTSTRAP=$BOOTSTRAP"
}

# ------------------------------------------------------------- stop / kill --
do_stop_locked() {
  local pid
  if pid="$(running_pid)"; then
    log "stopping broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_dead "$pid" 20; then
      log "broker did not stop within 20s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_dead "$pid" 10 || die "could not kill pid $pid"
    fi
  else
    log "not running"
  fi
  rm -f "$PID_FILE"
  if [[ "${RILL_TEST_BROKER_KEEP:-0}" == 1 ]]; then
    log "keeping $RUN_DIR (RILL_TEST_BROKER_KEEP=1)"
  elif [[ -d "$RUN_DIR" ]]; then
    rm -rf "$RUN_DIR"
  fi
}

do_kill_locked() {
  local pid
  if pid="$(running_pid)"; then
    log "killing broker (pid $pid) with SIGKILL; data kept in $DATA_DIR"
    kill -KILL "$pid" 2>/dev/null || true
    wait_dead "$pid" 10 || die "could not kill pid $pid"
  else
    log "not running"
  fi
  rm -f "$PID_FILE"
}

do_status() {
  local pid
  if pid="$(running_pid)"; then
    log "running (pid $pid, dir $RUN_DIR)"
    echo "KAFKA_BOOTSTRAP=$BOOTSTRAP"
    return 0
  fi
  log "not running"
  return 1
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

RUN_LOCK="${RUN_DIR%/}.lock"
cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  fetch)     do_fetch; log "Kafka $KAFKA_VERSION jars in $LIBS" ;;
  start)     with_lock "$RUN_LOCK" do_start_locked ;;
  stop)      with_lock "$RUN_LOCK" do_stop_locked ;;
  kill)      with_lock "$RUN_LOCK" do_kill_locked ;;
  status)    do_status ;;
  classpath) do_fetch; echo "$LIBS/*" ;;
  tool)      [[ $# -ge 1 ]] || die "usage: $0 tool CLASS [ARGS...]"
             do_fetch; run_tool "$@" ;;
  -h|--help|help) usage ;;
  *)         usage; exit 2 ;;
esac
