#!/usr/bin/env bash
# The memtier benchmark table: `moed bench` on the bench model at 25%, 50% and 100% of the
# routed experts cached in host RAM, the page cache dropped before each run (needs root).
# share: the disk tier's read rate over a raw sequential O_DIRECT read of the same files, each
# round paired with a raw probe taken just before it (median over rounds); pack_GB/s: the rate
# at which read bytes become packed weights, the other stage a streamed block goes through.
# Usage: scripts/bench-memtier.sh [MODEL_DIR] [extra moed bench flags...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
model=${1:-"$root/models/bench"}
shift || true
[[ -f $model/config.json ]] || /usr/bin/python3 "$here/make-tiny-model.py" --out "$model" --size bench --dtype bf16
moed="$root/build/daemon/moed"
printf '%-7s %-9s %-9s %-8s %-9s %-10s %-12s %-10s %-10s %-12s %-9s\n' budget prefill decode hit% prefetch MB/token tier_GB/s raw_GB/s share pack_GB/s RSS_MiB
for share in 25% 50% 100%; do
  "$moed" bench --model "$model" --host-budget "$share" --prompt-tokens 128 --decode-tokens 64 \
    --drop-caches --json "$@" 2>/dev/null |
    /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%-7s %-9.1f %-9.1f %-8.1f %-9.1f %-10.1f %-12.2f %-10.2f %-10s %-12.2f %-9.0f" % (
    sys.argv[1], r["prefill_tokens_per_s"], r["decode_tokens_per_s"], 100 * r["host_hit_rate"],
    100 * r["prefetch_accuracy"], r["disk_bytes_per_token"] / 1e6, r["disk_read_bytes_per_s"] / 1e9,
    r["raw_sequential_read_bytes_per_s"] / 1e9,
    "%.0f%%" % (100 * r["disk_share_of_raw"]) if r["raw_sequential_read_bytes_per_s"] else "-",
    r["packing_bytes_per_s"] / 1e9, r["peak_rss_bytes"] / 2**20))' "$share"
done
