#!/usr/bin/env bash
# Configures and builds moed. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# Defaults: build/, Release. CUDA is built when nvcc is found (MOED_CUDA); -DMOED_CUDA=OFF skips it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-"$root/build"}
shift || true
# CMake's CUDA detection looks on PATH; the toolkit installs under /usr/local/cuda.
[[ -x /usr/local/cuda/bin/nvcc && ":$PATH:" != *":/usr/local/cuda/bin:"* ]] && export PATH="/usr/local/cuda/bin:$PATH"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "${MOED_JOBS:-2}"
