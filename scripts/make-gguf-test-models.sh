#!/usr/bin/env bash
# Makes the GGUF files the tests read, under DIR (default build/test-models), from the
# safetensors test models scripts/make-test-models.sh writes there first: the formats check file
# and tiny models converted by scripts/hf-to-gguf.py (f32, q8_0, q4_k_m, a byte-level one split
# in three).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../build/test-models"}
convert() { /usr/bin/python3 "$here/hf-to-gguf.py" --model "$out/$1" --out "$out/$2" "${@:3}" 2>/dev/null; }
/usr/bin/python3 "$here/gguf_file.py" --formats "$out/formats.gguf"
convert tiny-f32 tiny-f32.gguf --type f32
convert tiny-f32 tiny-q8_0.gguf --type q8_0
convert tiny-f32 tiny-q4_k_m.gguf --type q4_k_m
convert tiny-bytelevel tiny-bytelevel-q6_k.gguf --type q6_k --splits 3
echo "GGUF test models in $out"
