#!/usr/bin/env bash
# End-to-end checks of the trained default model (models/default) through the real moed binary:
# held-out perplexity against the PyTorch golden the training script wrote (eval.json), the same
# perplexity to the bit at every host budget, English out of greedy and sampled generation, and
# clear errors for bad perplexity input; on the held-out routing, the default cache policy against
# the others at every cache size.
set -uo pipefail
moed=$1 model=$2 moectl=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/checks.sh"

context=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["context"])' "$model/eval.json")
if [[ -n ${MOED_SANITIZED:-} ]]; then
  echo "skip held-out golden: sanitizer build (40k tokens; checked in the normal build)"
elif "$moed" perplexity --model "$model" --file "$model/heldout.txt" --context "$context" --json \
     --trace "$work/heldout.jsonl" >"$work/full.json" 2>"$work/err" &&
   /usr/bin/python3 - "$work/full.json" "$model/eval.json" <<'PY'
import json, sys
got, want = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert got["tokens"] == want["tokens"] and got["scored"] == want["scored"], (got, want)
rel = abs(got["perplexity"] - want["perplexity"]) / want["perplexity"]
print("moed %.4f, PyTorch %.4f, relative difference %.2e" % (got["perplexity"], want["perplexity"], rel))
assert rel < 1e-3, rel
PY
then pass "held-out perplexity within 0.1% of PyTorch's"; else fail "held-out perplexity"; cat "$work/err" "$work/full.json"; fi

# A CPU with AVX2 alone (oneDNN and moed's own kernels capped at AVX2 here) has no oneDNN bf16
# matmul: the bf16 weights are computed in moed's AVX2 panels instead, with activations kept in
# f32, and give the same perplexity as PyTorch's.
if [[ -n ${MOED_SANITIZED:-} ]]; then
  echo "skip held-out golden with oneDNN capped at AVX2: sanitizer build (checked in the normal build)"
elif ONEDNN_MAX_CPU_ISA=AVX2 MOED_MAX_PANEL_ISA=avx2 MOED_MAX_QUANT_ISA=avx2 "$moed" perplexity --model "$model" --file "$model/heldout.txt" \
     --context "$context" --json >"$work/avx2.json" 2>"$work/err" &&
   /usr/bin/python3 - "$work/avx2.json" "$model/eval.json" <<'PY'
import json, sys
got, want = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert got["scored"] == want["scored"], (got, want)
rel = abs(got["perplexity"] - want["perplexity"]) / want["perplexity"]
print("moed with oneDNN at AVX2 %.4f, PyTorch %.4f, relative difference %.2e" % (got["perplexity"], want["perplexity"], rel))
assert rel < 1e-3, rel
PY
then pass "held-out perplexity capped at AVX2 (bf16 in moed's AVX2 panels) within 0.1% of PyTorch's"
else fail "held-out perplexity with oneDNN capped at AVX2"; cat "$work/err" "$work/avx2.json"; fi

# Trained routing has the structure real routing has (README, "Memory tiers"). Replayed as
# decoding asks for experts (perplexity computes a window layer by layer; decode goes token by
# token through the layers), the default policy must hit at least as often as LRU, LFU and ARC
# at every cache size up to 75% of the expert blocks (above that all four hit nearly every
# request, and the default may trail by a few requests in ten thousand), and below one token's
# working set (8 blocks), where those three never hit, reach 40% of the optimum.
if [[ -s $work/heldout.jsonl ]]; then
  /usr/bin/python3 - "$work/heldout.jsonl" "$work/decode-order.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
rows.sort(key=lambda r: (r["token"], r["layer"]))
with open(sys.argv[2], "w") as out:
    out.writelines(json.dumps(r) + "\n" for r in rows)
PY
  if "$moectl" trace simulate "$work/decode-order.jsonl" --blocks "$(seq -s, 1 31)" --json \
       >"$work/simulated.json" 2>"$work/err" &&
     /usr/bin/python3 - "$work/simulated.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
hits = {(r["policy"], r["blocks"]): r["hits"] for r in results}
requests = results[0]["requests"]
for blocks in range(1, 32):
    best = max(hits[(p, blocks)] for p in ("lru", "lfu", "arc"))
    slack = 0 if blocks <= 24 else requests // 10000
    assert hits[("tinylfu", blocks)] >= best - slack, (blocks, {p: hits[(p, blocks)] for p in ("lru", "lfu", "arc", "tinylfu")})
for blocks in range(1, 8):
    assert hits[("tinylfu", blocks)] >= 0.4 * hits[("belady", blocks)], (blocks, hits[("tinylfu", blocks)], hits[("belady", blocks)])
print("tinylfu / belady at 4, 8, 16, 24 blocks: " + ", ".join(
    "%.0f%%" % (100 * hits[("tinylfu", b)] / hits[("belady", b)]) for b in (4, 8, 16, 24)))
PY
  then pass "default policy on trained routing: no fewer hits than lru, lfu or arc at 1-24 of 32 blocks"
  else fail "default policy on trained routing"; cat "$work/err"; fi
else
  echo "skip default policy on trained routing: no held-out trace (sanitizer build or a failed run)"
fi

# Every budget computes the same numbers: a prefix of the held-out text at four budgets (down
# to the ring of sections), compared to the last digit.
head -c 24000 "$model/heldout.txt" >"$work/part.txt"
same=1
for budget in "" 50% 25% 2MiB; do
  "$moed" perplexity --model "$model" --file "$work/part.txt" --context 256 --json \
    ${budget:+--host-budget "$budget"} >"$work/part-${budget:-all}.json" 2>"$work/err" ||
    { same=0; cat "$work/err"; }
  cmp -s "$work/part-all.json" "$work/part-${budget:-all}.json" || same=0
done
[[ $same -eq 1 ]] && pass "perplexity identical at every host budget (all, 50%, 25%, 2MiB ring)" ||
  { fail "perplexity differs across budgets"; head -n 20 "$work"/part-*.json; }

# English in the corpus' style: nearly every word generated is a word of the held-out books
# (a random-weight model of the same shape and tokenizer scores about 50%: its tokens are often
# whole words, in no order).
english() {
  /usr/bin/python3 - "$1" "$model/heldout.txt" <<'PY'
import re, sys
words = re.findall(r"[A-Za-z]+", open(sys.argv[1]).read())
known = set(w.lower() for w in re.findall(r"[A-Za-z]+", open(sys.argv[2]).read()))
share = sum(w.lower() in known for w in words) / max(1, len(words))
print("%d words, %.0f%% of them in the held-out books" % (len(words), 100 * share))
sys.exit(0 if len(words) >= 20 and share >= 0.8 else 1)
PY
}
"$moed" generate --model "$model" --prompt "And it came to pass" -n 64 >"$work/greedy.txt" 2>/dev/null
english "$work/greedy.txt" && pass "greedy continuation is English" || { fail "greedy continuation"; cat "$work/greedy.txt"; }
"$moed" generate --model "$model" --prompt "The LORD is my shepherd" -n 64 --temperature 0.8 \
  --top-p 0.95 --seed 7 >"$work/sampled.txt" 2>/dev/null
english "$work/sampled.txt" && pass "sampled continuation is English" || { fail "sampled continuation"; cat "$work/sampled.txt"; }

expect_error "perplexity: missing file named" "cannot read '$work/none.txt'" \
  "$moed" perplexity --model "$model" --file "$work/none.txt"
printf 'A' >"$work/one.txt"
expect_error "perplexity: one-token file refused" "has 1 tokens" \
  "$moed" perplexity --model "$model" --file "$work/one.txt"
expect_error "perplexity: context below 2" "\-\-context: 1 is not in" \
  "$moed" perplexity --model "$model" --file "$work/part.txt" --context 1
expect_error "perplexity: context past max_position_embeddings" "max_position_embeddings" \
  "$moed" perplexity --model "$model" --file "$work/part.txt" --context 100000

finish
