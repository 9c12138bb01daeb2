#!/usr/bin/env bash
# The main job on the embedded default: installs what is needed, builds, makes the small default
# model (models/tiny, a Mixtral-architecture checkpoint with random weights) and generates text.
# Usage: scripts/demo.sh ["prompt"] [tokens]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
prompt=${1:-"The capital of France is"}
tokens=${2:-32}
"$here/install-deps.sh"
"$here/build.sh" "$root/build"
model="$root/models/tiny"
[[ -f $model/config.json ]] || /usr/bin/python3 "$here/make-tiny-model.py" --out "$model" --dtype bf16
echo "moed generate --model $model --prompt \"$prompt\" -n $tokens"
"$root/build/daemon/moed" generate --model "$model" --prompt "$prompt" -n "$tokens"
