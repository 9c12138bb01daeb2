#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang in build-fuzz/ and runs each one over its
# seed corpus for a bounded time under ASan/UBSan; fails if any finds a crash, a hang, a leak or a
# sanitizer report (the input that did it lands in build-fuzz/fuzz-artifacts/).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 30)] [TARGET...]   (default: every target)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
seconds=${1:-30}
shift || true
"$here/install-deps.sh"
build="$root/build-fuzz"
CC=clang-16 CXX=clang++-16 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOED_FUZZ=ON -DMOED_CUDA=OFF
cmake --build "$build" --target fuzz_targets -j "${MOED_JOBS:-2}"

targets=("$@")
if ((${#targets[@]} == 0)); then
  for source in "$root"/tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$source" .cpp)"); done
fi
export ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$build/fuzz-artifacts"
# A target's dictionary (tests/fuzz/TARGET.dict: its format's keywords) helps it past them.
dict_option() {
  local dict="$root/tests/fuzz/$1.dict"
  if [[ -f $dict ]]; then echo "-dict=$dict"; fi
}
failed=()
for target in "${targets[@]}"; do
  # New inputs go to a corpus of the build's own; the committed seeds are only read.
  corpus="$build/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s"
  if ! "$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$target-" \
    $(dict_option "$target") \
    "$corpus" "$root/tests/fuzz/corpus/$target" 2>"$build/fuzz-artifacts/$target.log"; then
    tail -n 60 "$build/fuzz-artifacts/$target.log"
    failed+=("$target")
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' \
    "$build/fuzz-artifacts/$target.log" | tr '\n' ' '
  echo
done
if ((${#failed[@]} > 0)); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $build/fuzz-artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a finding"
