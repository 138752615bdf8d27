#!/usr/bin/env bash
# `iocsync reconcile` (dry run) of N values against the SentinelOne fake: the fake and the seeded
# state live in the example's process, iocsync runs as its own process under /usr/bin/time.
# Prints iocsync's wall time, peak RSS and the report's totals (10 missing, 10 extra and 10 not
# managed are planted).
#
# Usage: bench/reconcile.sh            Env: N (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
cargo build --release --quiet --bin iocsync --example reconcile_bench
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
"$TARGET_DIR/release/examples/reconcile_bench" "$N" "$TARGET_DIR/release/iocsync"
