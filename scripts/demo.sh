#!/usr/bin/env bash
# The main job on the embedded default: installs what is needed, builds, makes the small default
# model (models/tiny, a Mixtral-architecture checkpoint with random weights), starts the moed
# daemon on a temporary socket, and talks to it with moectl and curl.
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
moed="$root/build/daemon/moed" moectl="$root/build/client/moectl"
run=$(mktemp -d)
sock="$run/moed.sock"
"$moed" --model "$model" --socket "$sock" --host-budget 50% --state-dir "$run" 2>"$run/moed.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$run"' EXIT
until "$moectl" --socket "$sock" status >/dev/null 2>&1; do
  kill -0 $daemon 2>/dev/null || { cat "$run/moed.log"; exit 1; }
  sleep 0.2
done
echo "\$ moectl generate \"$prompt\" -n $tokens --stream"
"$moectl" --socket "$sock" generate "$prompt" -n "$tokens" --temperature 0.8 --seed 1 --stream
echo
echo "\$ curl --unix-socket $sock http://moed/v1/completions -d '{\"prompt\":\"Hi\",\"max_tokens\":8}'"
curl -s --unix-socket "$sock" http://moed/v1/completions -d '{"prompt":"Hi","max_tokens":8}'
echo
echo
echo
echo "\$ moectl chat \"Hello, who are you?\" -n $tokens"
"$moectl" --socket "$sock" chat "Hello, who are you?" -n "$tokens" --temperature 0.8 --seed 1
echo
echo "\$ moectl cache show"
"$moectl" --socket "$sock" cache show
