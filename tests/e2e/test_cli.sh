#!/usr/bin/env bash
# End-to-end checks of the real moed binary: logits against the numpy golden files, generate,
# tokenize, and clear errors (exit 1, message naming the problem) for bad input.
set -uo pipefail
moed=$1 models=$2 golden=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0 passed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failures=$((failures + 1)); echo "FAIL $1"; }

tokens=$(cat "$golden/prompt-tokens.txt")
for model in tiny-f32 tiny-bf16; do
  tol=1e-4; [[ $model == tiny-bf16 ]] && tol=2e-2
  if "$moed" logits --model "$models/$model" --tokens "$tokens" --out "$work/$model.npy" 2>"$work/err" &&
     /usr/bin/python3 - "$work/$model.npy" "$golden/$model.logits.npy" "$tol" <<'PY'
import sys, numpy as np
got, want, tol = np.load(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3])
assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
rel = np.abs(got - want).max() / np.abs(want).max()
assert rel <= tol, rel
assert (got.argmax(-1) == want.argmax(-1)).all()
PY
  then pass "logits $model match the reference"; else fail "logits $model"; cat "$work/err"; fi
done

out=$("$moed" generate --model "$models/tiny-f32" --prompt "The capital of France is" -n 8 --print-ids 2>"$work/ids")
if [[ $? -eq 0 && -n $out ]] && [[ $(tr ',' '\n' <"$work/ids" | grep -c .) -eq 8 ]]; then
  pass "generate prints text and 8 ids"; else fail "generate"; fi

a=$("$moed" generate --model "$models/tiny-f32" --prompt "Hi" -n 12 --temperature 0.8 --seed 5 --print-ids 2>&1 >/dev/null)
b=$("$moed" generate --model "$models/tiny-f32" --prompt "Hi" -n 12 --temperature 0.8 --seed 5 --print-ids 2>&1 >/dev/null)
[[ -n $a && $a == "$b" ]] && pass "same seed, same tokens" || fail "seeded generate ($a vs $b)"

ids=$("$moed" tokenize --model "$models/tiny-f32" --text "Hello world")
[[ $ids =~ ^1(,[0-9]+)+$ ]] && pass "tokenize adds BOS ($ids)" || fail "tokenize: $ids"
ids=$("$moed" tokenize --model "$models/tiny-f32" --text "Hello world" --no-special)
[[ $ids =~ ^[0-9]+(,[0-9]+)*$ && ! $ids =~ ^1, ]] && pass "tokenize --no-special" || fail "tokenize --no-special: $ids"

# expect_error NAME PATTERN CMD...: exit status 1 and PATTERN in stderr.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  "$@" >/dev/null 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 1 ]] && grep -q -- "$pattern" "$work/err"; then pass "$name"
  else fail "$name (rc=$rc)"; cat "$work/err"; fi
}
cp -r "$models/tiny-f32" "$work/notok" && rm "$work/notok/tokenizer.json"
expect_error "missing tokenizer" "tokenizer.json" "$moed" generate --model "$work/notok" --prompt x -n 1
cp -r "$models/tiny-f32" "$work/trunc" && truncate -s 1000000 "$work/trunc/model.safetensors"
expect_error "truncated safetensors" "truncated" "$moed" logits --model "$work/trunc" --tokens 1 --out "$work/x.npy"
expect_error "token id out of range" "outside the vocabulary" "$moed" logits --model "$models/tiny-f32" --tokens 1,512 --out "$work/x.npy"
expect_error "bad token list" "not a token id" "$moed" logits --model "$models/tiny-f32" --tokens 1,x --out "$work/x.npy"
"$moed" logits --model /nonexistent --tokens 1 --out "$work/x.npy" >/dev/null 2>&1
[[ $? -ne 0 ]] && pass "missing model directory is refused" || fail "missing model directory"
"$moed" --help | grep -q "logits" && pass "--help lists the commands" || fail "--help"

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
