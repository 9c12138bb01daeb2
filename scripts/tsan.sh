#!/usr/bin/env bash
# Builds with ThreadSanitizer (CPU only, build-tsan/) and runs, under it, what has threads of its
# own: the memtier tests (reader, block loader, host tier, tiered store, ring), the scheduler
# tests and the engine over memtier (prefetch, read errors, stats read while decoding), and the
# daemon end to end (concurrent clients with stats and admin calls meanwhile, killed clients,
# SIGHUP, the SIGTERM drain). Fails on any report.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$root/build-tsan
"$here/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOED_SANITIZE=thread \
  -DMOED_CUDA=OFF >/dev/null
cmake --build "$build" -j "${MOED_JOBS:-2}" --target test_memtier test_engine test_kernels moed moectl
"$here/make-test-models.sh" "$build/test-models" >/dev/null
"$here/make-gguf-test-models.sh" "$build/test-models" >/dev/null  # the GGUF daemon of test_daemon.sh

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
# Reports go to files (one per process, daemon and CLI included) as well as stopping the process
# at the first one, so a report in a process whose exit status a test ignores still fails here.
# tsan.supp says what is suppressed and why (code TSan cannot see into, never moed's).
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 log_path=$reports/tsan suppressions=$here/tsan.supp"
# OpenMP: Debian's libgomp is not built with TSan, so TSan cannot see the barriers that order
# the threads of a parallel region and reports every parallel loop (and oneDNN's) as a race. The
# runs here compute on one thread, which executes every parallel region on the thread that
# enters it: OMP_NUM_THREADS for threads that set nothing, and a one-core synthetic topology for
# hwloc, from which the engine takes its own thread counts. (Capping with OMP_THREAD_LIMIT is
# not an option: omp_get_max_threads() still says more, oneDNN splits its work for that many,
# and the golden logits came out wrong.)
# The races checked are those between moed's own threads: scheduler, HTTP connections, loader's
# I/O and packer, signal handling.
export OMP_NUM_THREADS=1 HWLOC_SYNTHETIC="core:1 pu:1"
# Tells the e2e script to skip what sanitizers change by design (see sanitize.sh).
export MOED_SANITIZED=1

status=0
run() {
  local start=$SECONDS
  echo "== tsan: $*"
  "$@" || status=1
  echo "== tsan: $1 took $((SECONDS - start)) s"
}
run "$build/tests/test_memtier"
# The compute Team's own synchronisation, with more threads than the one the engine gets here
# (its OpenMP fallback is left out: libgomp's handoffs are invisible to TSan).
run "$build/tests/test_kernels" --gtest_filter='Team.EachMember*:Team.Rethrows*:Team.ARegionInside*:Threads.WaitWithTeamAwakeRuns*:Threads.WaitWithTeamAwakeSpins*'
run "$build/tests/test_engine" --gtest_filter='Scheduler.*:EngineMemtier.*'
run "$root/tests/e2e/test_daemon.sh" "$build/daemon/moed" "$build/test-models" "$root/configs" \
  "$build/client/moectl" "$root"
if compgen -G "$reports/tsan*" >/dev/null; then
  echo "tsan: ThreadSanitizer reports:"
  cat "$reports"/tsan*
  status=1
fi
exit $status
