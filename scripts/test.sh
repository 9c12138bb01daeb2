#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole default test suite (unit + e2e; perf
# benchmarks are labelled and left out: run them with `ctest --test-dir build -L perf`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
"$here/install-deps.sh"
"$here/build.sh" "$root/build"
ctest --test-dir "$root/build" -LE perf --output-on-failure -j "${MOED_JOBS:-2}"
