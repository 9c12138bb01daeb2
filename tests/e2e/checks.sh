# Shared by the e2e scripts (sourced after they set $work, their scratch directory): counts
# checks, prints "ok"/"FAIL" lines, and checks that a command fails with a named error.
failures=0 passed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failures=$((failures + 1)); echo "FAIL $1"; }

# expect_error NAME PATTERN CMD...: exit status 1 and PATTERN in stderr.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  "$@" >/dev/null 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 1 ]] && grep -q -- "$pattern" "$work/err"; then pass "$name"
  else fail "$name (rc=$rc)"; cat "$work/err"; fi
}

# The last line of every script: the tally, and its status.
finish() {
  echo "$passed passed, $failures failed"
  [[ $failures -eq 0 ]]
}
