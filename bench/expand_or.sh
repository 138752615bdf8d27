#!/usr/bin/env bash
# One indicator whose pattern is an `IN` of N IPv4 addresses (default 3,000, about 45 KB of
# pattern), run through `iocsync run` (file source → JSONL + Zeek) with `pipeline.expand_or` on.
# Prints the state directory's size and the peak RSS. Usage: bench/expand_or.sh BINARY [N] [MAX]
# (MAX sets pipeline.expand_max; leave it out for a binary that predates the setting).
set -euo pipefail
bin=${1:?usage: bench/expand_or.sh BINARY [N] [MAX]}
n=${2:-3000}
if [ -n "${3:-}" ]; then export IOCSYNC_PIPELINE_EXPAND_MAX=$3; fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$n" >"$dir/bundle.json" <<'PY'
import json, sys
n = int(sys.argv[1])
ips = ", ".join(f"'10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}'" for i in range(n))
print(json.dumps({"type": "bundle", "id": "bundle--1", "objects": [{
    "type": "indicator", "spec_version": "2.1", "id": "indicator--1",
    "created": "2025-01-01T00:00:00Z", "modified": "2025-01-01T00:00:00Z",
    "name": "big IN", "pattern_type": "stix", "valid_from": "2025-01-01T00:00:00Z",
    "pattern": f"[ipv4-addr:value IN ({ips})]"}]}))
PY
echo "pattern bytes: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["objects"][0]["pattern"]))' "$dir/bundle.json")"
IOCSYNC_FILE_PATH="$dir/bundle.json" IOCSYNC_STATE_DIR="$dir/state" \
IOCSYNC_JSONL_PATH="$dir/out/iocs.jsonl" IOCSYNC_ZEEK_INTEL_PATH="$dir/out/intel.dat" \
IOCSYNC_PIPELINE_EXPAND_OR=true IOCSYNC_PIPELINE_LINGER=20ms \
  /usr/bin/time -f "peak RSS: %M KB, wall: %e s" "$bin" run 2>"$dir/stderr" >"$dir/stdout" || { cat "$dir/stderr"; exit 1; }
grep -m1 "run summary" "$dir/stdout"; tail -1 "$dir/stderr"
echo "state dir: $(du -sk "$dir/state" | cut -f1) KB"
