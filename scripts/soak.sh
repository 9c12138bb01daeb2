#!/usr/bin/env bash
# Soak test: the real daemon on the bench model under a host budget, N clients for a duration
# (streaming and not, random lengths and sampling, cancellations, SIGKILLed clients, malformed
# requests), RSS sampled every second against budget (weights and KV) + fixed overhead. Prints the summary
# and exits non-zero on any unexpected error, RSS over the bound or a daemon crash.
# Usage: scripts/soak.sh [--duration 600] [--clients 8] [--host-budget 25%] [--out DIR]
#                        [--model DIR] [--build DIR] [extra scripts/soak.py flags...]
# MOED_SOAK_DURATION sets the default duration (e.g. a short check through ctest).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
duration=${MOED_SOAK_DURATION:-600}
clients=8
budget=25%
out=""
model="$root/models/bench"
build="$root/build"
extra=()
while (($#)); do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --host-budget) budget=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done
[[ -n $out ]] || out="$root/build/soak-$(date +%Y%m%d-%H%M%S)"

"$here/install-deps.sh"
# Only the daemon is needed; configure the way scripts/build.sh does when there is no build yet.
if [[ ! -f $build/build.ninja ]]; then
  [[ -x /usr/local/cuda/bin/nvcc && ":$PATH:" != *":/usr/local/cuda/bin:"* ]] && export PATH="/usr/local/cuda/bin:$PATH"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" --target moed -j "${MOED_JOBS:-2}"
[[ -f $model/config.json ]] ||
  /usr/bin/python3 "$here/make-tiny-model.py" --out "$model" --size bench --dtype bf16

exec /usr/bin/python3 "$here/soak.py" --moed "$build/daemon/moed" --model "$model" \
  --duration "$duration" --clients "$clients" --host-budget "$budget" --out "$out" "${extra[@]}"
