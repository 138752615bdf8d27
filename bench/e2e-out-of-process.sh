#!/usr/bin/env bash
# End-to-end throughput with both remotes in another process, over loopback sockets: the fake
# OpenCTI live stream (N single-IPv4 indicator creates) → `iocsync run --once` → the fake
# SentinelOne console (batches of 1,000). Prints live indicators/s (IOCs the S1 fake acknowledged,
# over iocsync's wall time) and iocsync's peak RSS.
#
# Usage: bench/e2e-out-of-process.sh
# Env:   N (default 20000) indicators, RUNS (default 3),
#        FAKE_CHUNK_BYTES (default 65536; 0 = one SSE frame per body chunk),
#        STAGES=1 also prints where iocsync's wall time went (from its debug log: planning,
#        S1 calls, outcome recording; the rest is reading/decoding and waiting for the source).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
RUNS=${RUNS:-3}
cargo build --release --quiet --bin iocsync --example fake_remotes
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/release/iocsync"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for run in $(seq 1 "$RUNS"); do
  mkfifo "$WORK/in"
  "$TARGET_DIR/release/examples/fake_remotes" "$N" <"$WORK/in" >"$WORK/urls" 2>"$WORK/fake.log" &
  FAKE=$!
  exec 3>"$WORK/in" # holds the fake's stdin open until the run is over
  until [ "$(wc -l <"$WORK/urls")" -ge 4 ]; do sleep 0.1; done
  # shellcheck disable=SC2046 # one KEY=VALUE word per line
  export $(cat "$WORK/urls")
  rm -rf "$WORK/state"
  env CONNECTOR_ID=2f0c5f0e-8a4b-4f55-9a43-3d2c7e1b9a10 CONNECTOR_LIVE_STREAM_ID=stream-1 \
    CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE=false IOCSYNC_SINKS=sentinelone \
    SENTINELONE_INTEL_ACCOUNT_ID=1234567890 SENTINELONE_INTEL_BATCH_SIZE=1000 \
    IOCSYNC_STATE_DIR="$WORK/state" IOCSYNC_LOG_FORMAT=json \
    IOCSYNC_LOG="$([ "${STAGES:-0}" = 1 ] && echo iocsync=debug,warn || echo warn)" \
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" run --once >/dev/null 2>"$WORK/log"
  exec 3>&-
  wait "$FAKE"
  rm -f "$WORK/in"
  read -r secs rss_kb <"$WORK/time"
  live=$(grep -o 'holds [0-9]*' "$WORK/fake.log" | grep -o '[0-9]*')
  python3 - "$run" "$N" "$live" "$secs" "$rss_kb" <<'PY'
import sys
run, n, live, secs, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print(f"run {run}: {live}/{n} live in S1 in {secs:.2f} s = {live / secs:,.0f} live indicators/s, peak RSS {rss / 1024:.1f} MB")
PY
  if [ "${STAGES:-0}" = 1 ]; then
    python3 - "$WORK/log" "$secs" <<'PY'
import json, sys
plan = apply = call = record = batches = 0
for line in open(sys.argv[1]):
    try:
        f = json.loads(line)
    except ValueError:
        continue
    if f.get("message") == "batch applied":
        batches += 1; plan += f["plan_ms"]; apply += f["apply_ms"]
    elif f.get("message") == "chunk settled":
        call += f["call_ms"]; record += f["record_ms"]
wall = float(sys.argv[2]) * 1000
print(f"  {batches} batches: planning {plan} ms (overlaps the batch in flight), applying {apply} ms"
      f" = S1 calls {call} ms + outcome recording {record} ms; wall {wall:.0f} ms")
PY
  fi
done
