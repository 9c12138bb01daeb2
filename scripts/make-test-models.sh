#!/usr/bin/env bash
# Makes the small models the tests use, under DIR (default build/test-models). Deterministic:
# the same seed gives byte-identical files, which the checked-in golden logits rely on.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../build/test-models"}
make_model() { /usr/bin/python3 "$here/make-tiny-model.py" --out "$out/$1" "${@:2}" 2>/dev/null; }
mkdir -p "$out"
make_model tiny-f32 --dtype f32
make_model tiny-bf16 --dtype bf16
make_model tiny-f32-sharded --dtype f32 --shards 3
make_model tiny-bytelevel --dtype f32 --tokenizer bytelevel --layers 2
make_model tiny-tied --dtype f32 --tie-embeddings --layers 2
# One model per family in f32 and bf16 (same weights). The seeds are ones whose bf16 greedy
# continuation of greedy-prompt-tokens.txt has every top-1 margin above bf16 rounding (see
# tests/golden/README.md); the default seed's were not.
for family_seed in qwen2_moe:8 qwen3_moe:1 olmoe:8 deepseek_v2:1 deepseek_v3:5; do
  family=${family_seed%:*}
  seed=${family_seed#*:}
  make_model "tiny-$family" --family "$family" --dtype f32 --seed "$seed"
  make_model "tiny-$family-bf16" --family "$family" --dtype bf16 --seed "$seed"
done
# Fine-grained FP8 checkpoints as DeepSeek-V3 (F32 scales) and Qwen3's FP8 releases (some with
# BF16 scales) store them, in blocks small enough that a tiny model's matrices span several,
# partial ones included; seeds chosen as above. Beside each, the bf16 model DeepSeek's
# fp8_cast_bf16.py would make of it, which moed must compute to the same bits.
for dtype in fp8 fp8-cast; do
  make_model "tiny-deepseek_v3-$dtype" --family deepseek_v3 --dtype "$dtype" --seed 2 --fp8-block 32,32
  make_model "tiny-qwen3_moe-$dtype" --family qwen3_moe --dtype "$dtype" --seed 10 --fp8-block 32,48 \
    --fp8-scale-dtype BF16
done
echo "test models in $out"
