#!/usr/bin/env bash
# Makes the GGUF files the tests read, under DIR (default build/test-models), from the
# safetensors test models scripts/make-test-models.sh writes there first: the formats check file
# and tiny models converted by scripts/hf-to-gguf.py: Mixtral (arch llama) in f32, q8_0, q4_k_m, q3_k, q2_k, iq4_xs,
# iq3_s, iq3_xxs, iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, q8_0 with the legacy per-expert tensors, a byte-level one split in three; and each other family
# (qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3) in f32, q8_0 and q4_k_m as
# tiny-FAMILY-TYPE.gguf. The family models' hidden size is 128, so their K-quant tensors fall back
# to 32-element formats; the Mixtral one (hidden 256) covers the K-quants.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../build/test-models"}
convert() { /usr/bin/python3 "$here/hf-to-gguf.py" --model "$out/$1" --out "$out/$2" "${@:3}" 2>/dev/null; }
# Two conversions at a time; a failed one fails the script (a bare `wait` would not tell).
jobs=()
finish() { for job in "${jobs[@]}"; do wait "$job"; done; jobs=(); }
start() { convert "$@" & jobs+=($!); if (( ${#jobs[@]} >= 2 )); then finish; fi; }
/usr/bin/python3 "$here/gguf_file.py" --formats "$out/formats.gguf"
start tiny-f32 tiny-f32.gguf --type f32
start tiny-f32 tiny-q8_0.gguf --type q8_0
start tiny-f32 tiny-q4_k_m.gguf --type q4_k_m
start tiny-f32 tiny-q3_k.gguf --type q3_k
start tiny-f32 tiny-q2_k.gguf --type q2_k
start tiny-f32 tiny-iq4_xs.gguf --type iq4_xs
start tiny-f32 tiny-iq3_s.gguf --type iq3_s
start tiny-f32 tiny-iq3_xxs.gguf --type iq3_xxs
start tiny-f32 tiny-iq1_s.gguf --type iq1_s
start tiny-f32 tiny-iq1_m.gguf --type iq1_m
start tiny-f32 tiny-iq2_xxs.gguf --type iq2_xxs
start tiny-f32 tiny-iq2_xs.gguf --type iq2_xs
start tiny-f32 tiny-iq2_s.gguf --type iq2_s
start tiny-f32 tiny-split-experts-q8_0.gguf --type q8_0 --split-experts
start tiny-bytelevel tiny-bytelevel-q6_k.gguf --type q6_k --splits 3
for family in qwen2_moe qwen3_moe olmoe deepseek_v2 deepseek_v3; do
  for type in f32 q8_0 q4_k_m; do
    start "tiny-$family" "tiny-$family-$type.gguf" --type "$type"
  done
done
finish
echo "GGUF test models in $out"
