#!/usr/bin/env bash
# End-to-end throughput of the `iocsync parse` process against the Python reference
# `stix2-patterns`: the release binary reads COUNT single-comparison patterns from stdin and writes
# one JSON line each (to a file, checked for its line count), timed as a whole process — start-up,
# reading, parsing, classifying, JSON, writing. Python runs `run_validator` on the same lines in
# one loop timed inside the interpreter (no start-up, no output), so the ratio is conservative.
#
# The runs alternate (iocsync, Python, iocsync, …) so that load from other processes on a shared
# machine hits both alike; the script prints every run and the medians.
#
# Usage: bench/parse-end-to-end.sh
# Env:   COUNT (default 200000) patterns, SEED (default 42), RUNS (default 5) iocsync runs per
#        round, ROUNDS (default 2) Python runs (each between iocsync rounds),
#        PY_COUNT (default COUNT) how many of the lines Python validates (its rate is per pattern),
#        STIX2_VENV reuse this venv (stix2-patterns is installed in it),
#        CARGO_ARGS extra arguments for `cargo build`.
# Needs: cargo, python3 with venv, network access to PyPI (unless STIX2_VENV already has it),
#        taskset (util-linux) for the one-core figure.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-200000}
SEED=${SEED:-42}
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-2}
PY_COUNT=${PY_COUNT:-$COUNT}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# shellcheck disable=SC2086 # CARGO_ARGS is a list of words on purpose
cargo build --release --quiet --bin iocsync --example parse_corpus ${CARGO_ARGS:-}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
IOCSYNC="$TARGET_DIR/release/iocsync"
CORPUS_BIN="$TARGET_DIR/release/examples/parse_corpus"

"$CORPUS_BIN" generate-single "$COUNT" "$SEED" >"$WORK/corpus.txt"
head -n "$PY_COUNT" "$WORK/corpus.txt" >"$WORK/py-corpus.txt"

VENV=${STIX2_VENV:-$WORK/venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check stix2-patterns
PY_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("stix2-patterns"))')

# One timed `iocsync parse` process; prints patterns/s. `$@` prefixes the command (e.g. taskset).
run_iocsync() {
  local start end
  start=$(date +%s%N)
  "$@" "$IOCSYNC" parse <"$WORK/corpus.txt" >"$WORK/out.jsonl"
  end=$(date +%s%N)
  local lines
  lines=$(wc -l <"$WORK/out.jsonl")
  if [ "$lines" -ne "$COUNT" ]; then
    echo "iocsync parse wrote $lines lines for $COUNT patterns" >&2
    exit 1
  fi
  echo "$COUNT * 1000000000 / ($end - $start)" | bc
}

run_python() {
  "$VENV/bin/python" - "$WORK/py-corpus.txt" <<'PY'
import sys, time
from stix2patterns.validator import run_validator

lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
valid = 0
start = time.perf_counter()
for line in lines:
    try:
        if not run_validator(line):
            valid += 1
    except Exception:  # the reference crashes on a few inputs; none are generated here
        pass
elapsed = time.perf_counter() - start
print("%.0f %d" % (len(lines) / elapsed, valid))
PY
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: >"$WORK/rust.txt"
: >"$WORK/rust1.txt"
: >"$WORK/py.txt"
for round in $(seq 0 "$ROUNDS"); do
  for _ in $(seq "$RUNS"); do
    run_iocsync >>"$WORK/rust.txt"
    if command -v taskset >/dev/null; then
      run_iocsync taskset -c 0 >>"$WORK/rust1.txt"
    fi
  done
  if [ "$round" -lt "$ROUNDS" ]; then
    read -r rate valid < <(run_python)
    echo "$rate" >>"$WORK/py.txt"
  fi
done

VALID_RUST=$(grep -c '"valid":true' "$WORK/out.jsonl" || true)
RUST=$(median <"$WORK/rust.txt")
PY=$(median <"$WORK/py.txt")
echo "machine:        $(nproc) cores, $(uname -m), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "corpus:         $COUNT single-comparison patterns (seed $SEED), iocsync valid: $VALID_RUST; python: $PY_COUNT lines, valid: $valid; stix2-patterns $PY_VERSION"
echo "iocsync runs:   $(tr '\n' ' ' <"$WORK/rust.txt")"
if [ -s "$WORK/rust1.txt" ]; then
  echo "one-core runs:  $(tr '\n' ' ' <"$WORK/rust1.txt")(taskset -c 0)"
fi
echo "python runs:    $(tr '\n' ' ' <"$WORK/py.txt")"
printf 'iocsync parse:  %12.0f patterns/s (median, whole process)\n' "$RUST"
if [ -s "$WORK/rust1.txt" ]; then
  printf 'one core:       %12.0f patterns/s (median)\n' "$(median <"$WORK/rust1.txt")"
fi
printf 'python:         %12.0f patterns/s (median, run_validator loop)\n' "$PY"
printf 'ratio:          %12.0fx\n' "$(echo "$RUST / $PY" | bc -l)"
