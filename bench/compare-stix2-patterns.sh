#!/usr/bin/env bash
# Compares iocsync's STIX pattern parser with the Python reference `stix2-patterns` on one
# generated corpus: patterns/s for each, the ratio, and every line where they disagree on
# valid/invalid.
#
# Usage: bench/compare-stix2-patterns.sh
# Env:   COUNT (default 10000) patterns, SEED (default 42) for the generator,
#        STIX2_VENV  reuse this venv instead of a throwaway one (stix2-patterns is installed in it),
#        CARGO_ARGS  extra arguments for `cargo build` (e.g. --config ...).
# Needs: cargo, python3 with venv, network access to PyPI (unless STIX2_VENV already has it).
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-10000}
SEED=${SEED:-42}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# shellcheck disable=SC2086 # CARGO_ARGS is a list of words on purpose
cargo build --release --quiet --example parse_corpus ${CARGO_ARGS:-}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/release/examples/parse_corpus"

"$BIN" generate "$COUNT" "$SEED" >"$WORK/corpus.txt"

VENV=${STIX2_VENV:-$WORK/venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check stix2-patterns
PY_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("stix2-patterns"))')

RUST_LINE=$("$BIN" validate "$WORK/corpus.txt" "$WORK/rust.txt")

# The reference: run_validator on every line, timed over the whole corpus in one pass. Writes
# `1`, `0<TAB>first error` or `E<TAB>exception` per line.
PY_LINE=$("$VENV/bin/python" - "$WORK/corpus.txt" "$WORK/python.txt" <<'PY'
import sys, time
from stix2patterns.validator import run_validator

lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
verdicts = []
start = time.perf_counter()
for line in lines:
    try:
        errors = run_validator(line)
        verdicts.append("1" if not errors else "0\t" + errors[0].replace("\t", " "))
    except Exception as e:  # the reference crashes on a few valid inputs
        verdicts.append("E\t%s: %s" % (type(e).__name__, e))
elapsed = time.perf_counter() - start
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write("\n".join(verdicts) + "\n")
valid = sum(1 for v in verdicts if v == "1")
print("python patterns=%d valid=%d parse_per_s=%.0f" % (len(lines), valid, len(lines) / elapsed))
PY
)

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
RUST_RATE=$(field parse_per_s "$RUST_LINE")
RUST_CLASSIFY_RATE=$(field parse_classify_per_s "$RUST_LINE")
PY_RATE=$(field parse_per_s "$PY_LINE")

echo "machine:        $(nproc) cores, $(uname -m), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "corpus:         $COUNT patterns (seed $SEED); stix2-patterns $PY_VERSION"
echo "rust valid:     $(field valid "$RUST_LINE")   python valid: $(field valid "$PY_LINE")"
printf 'rust parse:     %12.0f patterns/s  (%.3f us/pattern)\n' "$RUST_RATE" "$(echo "1000000 / $RUST_RATE" | bc -l)"
printf 'rust +classify: %12.0f patterns/s\n' "$RUST_CLASSIFY_RATE"
printf 'python:         %12.0f patterns/s  (%.1f us/pattern)\n' "$PY_RATE" "$(echo "1000000 / $PY_RATE" | bc -l)"
printf 'ratio:          %12.0fx\n' "$(echo "$RUST_RATE / $PY_RATE" | bc -l)"
"$BIN" typical

# Disagreements: line number, both verdicts, the pattern and the reference's message.
paste -d '\t' "$WORK/rust.txt" "$WORK/python.txt" | awk -F '\t' '
  { py = ($2 == "1") ? "1" : "0" }
  $1 != py { n++; printf "%d\t%s\n", NR, $0 }
  END { exit 0 }' >"$WORK/disagree.txt"
DISAGREE=$(wc -l <"$WORK/disagree.txt")
echo "disagreements:  $DISAGREE"
while IFS=$'\t' read -r line rust py msg; do
  printf '  line %s: rust=%s python=%s  %s\n    %s\n' "$line" "$rust" "$py" \
    "$(sed -n "${line}p" "$WORK/corpus.txt" | cut -c1-160)" "${msg:0:160}"
done < <(head -20 "$WORK/disagree.txt")
