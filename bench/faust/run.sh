#!/usr/bin/env bash
# The Faust baseline of the benchmark suite (bench/BASELINES.md):
#
#   bash bench/faust/run.sh --scenario NAME --bootstrap HOST:PORT --events N \
#        --partitions P --prefix PREFIX [--state-dir DIR] [--threads T] [--rate R]
#
# Creates (once) a virtualenv with faust-streaming from requirements.txt under
# ~/.cache/rill/faust-venv (RILL_FAUST_VENV overrides; PYTHON picks the interpreter,
# default python3) and execs bench_app.py in it, so the suite's child pid is Python's.
# Setup output goes to stderr; stdout carries only the result line.
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REQ="$HERE/requirements.txt"
VENV="${RILL_FAUST_VENV:-${HOME:-/tmp}/.cache/rill/faust-venv}"
PY="${PYTHON:-python3}"

log() { printf 'faust/run.sh: %s\n' "$*" >&2; }

stamp() { { cksum < "$REQ"; "$PY" -c 'import sys; print(sys.version)'; } | cksum | awk '{print $1}'; }

ready() { [[ -x "$VENV/bin/python" && -f "$VENV/.rill-complete" && "$(cat "$VENV/.rill-complete")" == "$(stamp)" ]]; }

install() {
  ready && return 0
  log "creating $VENV ($("$PY" --version 2>&1)) from $REQ"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" >&2
  stamp > "$VENV/.rill-complete"
  log "virtualenv ready"
}

if ! ready; then
  mkdir -p "$(dirname -- "$VENV")"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock -w 600 9 || { log "timed out waiting for $VENV.lock"; exit 1; }
    install
    exec 9>&-
  else
    install
  fi
fi

export PYTHONUNBUFFERED=1
exec "$VENV/bin/python" "$HERE/bench_app.py" "$@"
