#!/usr/bin/env bash
# Builds with AddressSanitizer + UndefinedBehaviorSanitizer (CPU only) and runs the unit and e2e
# tests under it, corrupt-input tests included.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
"$here/install-deps.sh"
"$here/build.sh" "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DMOED_SANITIZE=ON -DMOED_CUDA=OFF
# Leak checking is off: oneDNN's JIT and libgomp keep process-lifetime allocations by design.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
# Tells the e2e scripts to skip what sanitizers change by design: RSS bounds (shadow memory and
# quarantine) and linking a plain consumer against the instrumented client library.
export MOED_SANITIZED=1
ctest --test-dir "$root/build-asan" -L "unit|e2e" --output-on-failure -j "${MOED_JOBS:-2}"
