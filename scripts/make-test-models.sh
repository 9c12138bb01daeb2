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
echo "test models in $out"
