#!/usr/bin/env bash
# Regenerates tests/golden/ from the numpy reference (scripts/reference.py). Run it only when
# make-tiny-model.py or the golden prompts change, and say why in the commit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
models=$(mktemp -d)
trap 'rm -rf "$models"' EXIT
"$here/make-test-models.sh" "$models"
"$here/make-gguf-test-models.sh" "$models"
golden="$here/../tests/golden"
mkdir -p "$golden"
tokens=$(cat "$golden/prompt-tokens.txt")
greedy_prompt=$(cat "$golden/greedy-prompt-tokens.txt")
for model in tiny-f32 tiny-bf16 tiny-tied; do
  /usr/bin/python3 "$here/reference.py" --model "$models/$model" --tokens "$tokens" \
    --out "$golden/$model.logits.npy"
done
for model in tiny-f32 tiny-bf16; do
  /usr/bin/python3 "$here/reference.py" --model "$models/$model" --tokens "$greedy_prompt" \
    --greedy 32 --out "$golden/$model.greedy.json"
done
for family in qwen2_moe qwen3_moe olmoe deepseek_v2 deepseek_v3; do
  /usr/bin/python3 "$here/reference.py" --model "$models/tiny-$family" --tokens "$tokens" \
    --out "$golden/$family.logits.npy"
  /usr/bin/python3 "$here/reference.py" --model "$models/tiny-$family-bf16" --tokens "$greedy_prompt" \
    --greedy 32 --out "$golden/$family-bf16.greedy.json"
done
for family in qwen3_moe deepseek_v3; do
  /usr/bin/python3 "$here/reference.py" --model "$models/tiny-$family-fp8" --tokens "$greedy_prompt" \
    --greedy 32 --out "$golden/$family-fp8.greedy.json"
done
# The GGUF fixtures, on their dequantized weights (reference.py reads the GGUF file alone).
mkdir -p "$golden/gguf"
gguf_fixtures="tiny-f32 tiny-q8_0 tiny-q4_k_m tiny-q3_k tiny-q2_k tiny-iq4_xs tiny-iq3_s tiny-iq3_xxs"
gguf_fixtures="$gguf_fixtures tiny-iq1_s tiny-iq1_m tiny-iq2_xxs tiny-iq2_xs tiny-iq2_s"
gguf_fixtures="$gguf_fixtures tiny-split-experts-q8_0"
for family in qwen2_moe qwen3_moe olmoe deepseek_v2 deepseek_v3; do
  gguf_fixtures="$gguf_fixtures tiny-$family-f32 tiny-$family-q8_0 tiny-$family-q4_k_m"
done
for fixture in $gguf_fixtures; do
  /usr/bin/python3 "$here/reference.py" --model "$models/$fixture.gguf" --tokens "$tokens" \
    --out "$golden/gguf/$fixture.logits.npy"
done
