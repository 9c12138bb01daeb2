#!/usr/bin/env bash
# Decode speed of every family's bench-size model (bf16, everything resident) as a share of the
# memory-bandwidth bound measured in the same run: prints a table. Models are made under DIR
# (default build/bench-models, ~300 MiB each) and kept for reruns.
#   scripts/bench-families.sh [DIR] [FAMILY...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
moed=${MOED:-"$here/../build/daemon/moed"}
dir=${1:-"$here/../build/bench-models"}
shift || true
families=("$@")
[[ ${#families[@]} -gt 0 ]] || families=(mixtral qwen2_moe qwen3_moe olmoe deepseek_v2 deepseek_v3)
mkdir -p "$dir"
printf '%-12s %10s %12s %14s %12s %8s\n' family "MiB/token" "decode tok/s" "bound tok/s" "prefill tok/s" share
for family in "${families[@]}"; do
  model="$dir/bench-$family"
  if [[ ! -f $model/config.json ]]; then
    echo "making $model" >&2
    /usr/bin/python3 "$here/make-tiny-model.py" --family "$family" --size bench --dtype bf16 \
      --out "$model" >/dev/null
  fi
  "$moed" bench --model "$model" --json --threads 2 --prompt-tokens 256 --decode-tokens 320 \
    >"$dir/bench-$family.json" 2>/dev/null
  /usr/bin/python3 - "$family" "$dir/bench-$family.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"{sys.argv[1]:<12} {r['bytes_per_decode_token'] / 2**20:10.1f} {r['decode_tokens_per_s']:12.1f}"
      f" {r['decode_bound_tokens_per_s']:14.1f} {r['prefill_tokens_per_s']:12.1f}"
      f" {100 * r['decode_share_of_bound']:7.1f}%")
PY
done
