#!/usr/bin/env bash
# The main job on the embedded default: installs what is needed, builds, starts the moed daemon
# on the trained default model (models/default: a small Mixtral-architecture MoE trained on the
# King James Bible by scripts/train-default-model.py, committed) on a temporary socket, and talks
# to it with moectl and curl.
# Usage: scripts/demo.sh ["prompt"] [tokens] [model dir]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
prompt=${1:-"And God said unto Moses"}
tokens=${2:-48}
model=${3:-"$root/models/default"}
"$here/install-deps.sh"
"$here/build.sh" "$root/build"
[[ -f $model/config.json ]] || { echo "demo: no model in $model (config.json missing)" >&2; exit 1; }
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
echo "\$ moectl generate \"$prompt\" -n $tokens --temperature 0      # greedy"
"$moectl" --socket "$sock" generate "$prompt" -n "$tokens" --temperature 0 --stream
echo
echo
echo "\$ moectl generate \"$prompt\" -n $tokens --temperature 0.8 --top-p 0.95 --seed 1"
"$moectl" --socket "$sock" generate "$prompt" -n "$tokens" --temperature 0.8 --top-p 0.95 --seed 1 --stream
echo
echo
body='{"prompt":"Blessed are the","max_tokens":24,"temperature":0}'
echo "\$ curl --unix-socket $sock http://moed/v1/completions -d '$body'"
curl -s --unix-socket "$sock" http://moed/v1/completions -d "$body"
echo
echo
echo "\$ moectl chat \"Who made the heaven and the earth?\" -n $tokens --temperature 0.7 --seed 1"
"$moectl" --socket "$sock" chat "Who made the heaven and the earth?" -n "$tokens" --temperature 0.7 --seed 1
echo
echo "\$ moectl cache show"
"$moectl" --socket "$sock" cache show
