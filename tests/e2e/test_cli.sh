#!/usr/bin/env bash
# End-to-end checks of the real moed binary: logits against the numpy golden files, generate,
# tokenize, and clear errors (exit 1, message naming the problem) for bad input.
set -uo pipefail
moed=$1 models=$2 golden=$3 moectl=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/checks.sh"

tokens=$(cat "$golden/prompt-tokens.txt")
for model in tiny-f32 tiny-bf16; do
  tol=1e-4; [[ $model == tiny-bf16 ]] && tol=2e-2
  if "$moed" logits --model "$models/$model" --tokens "$tokens" --out "$work/$model.npy" --kv-dtype f32 2>"$work/err" &&
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

# The other families through the binary: f32 logits within 1e-5 of reference.py, generate and
# bench at a 25% budget on the bf16 model, and the plan `moed info` prints.
for family in qwen2_moe qwen3_moe olmoe deepseek_v2 deepseek_v3; do
  if "$moed" logits --model "$models/tiny-$family" --tokens "$tokens" --out "$work/$family.npy" --kv-dtype f32 2>"$work/err" &&
     /usr/bin/python3 - "$work/$family.npy" "$golden/$family.logits.npy" <<'PY'
import sys, numpy as np
got, want = np.load(sys.argv[1]), np.load(sys.argv[2])
assert got.shape == want.shape, (got.shape, want.shape)
rel = np.abs(got - want).max() / np.abs(want).max()
assert rel <= 1e-5, rel
PY
  then pass "$family: f32 logits within 1e-5 of the reference"; else fail "$family logits"; cat "$work/err"; fi
  "$moed" logits --model "$models/tiny-$family" --tokens "$tokens" --out "$work/$family-quarter.npy" --kv-dtype f32 --host-budget 25% 2>/dev/null
  cmp -s "$work/$family.npy" "$work/$family-quarter.npy" && pass "$family: bit-identical at a 25% budget" || fail "$family budgeted logits differ"
  out=$("$moed" generate --model "$models/tiny-$family-bf16" --prompt "Hello world 123" -n 6 --print-ids 2>"$work/ids")
  [[ $? -eq 0 ]] && [[ $(tr ',' '\n' <"$work/ids" | grep -c .) -eq 6 ]] && pass "$family: generate" || fail "$family generate: $(cat "$work/ids")"
  "$moed" bench --model "$models/tiny-$family-bf16" --host-budget 25% --json --bandwidth-mib 64 \
    --prompt-tokens 16 --decode-tokens 8 >"$work/bench-$family.json" 2>/dev/null &&
    /usr/bin/python3 -c "import json; r = json.load(open('$work/bench-$family.json')); assert r['decode_tokens_per_s'] > 0 and r['matmul']" &&
    pass "$family: bench" || fail "$family bench"
  "$moed" info --model "$models/tiny-$family" >"$work/info" 2>&1 && grep -q "^family: $family" "$work/info" &&
    grep -Eq "^1 +(gqa|mla) +(moe|dense)" "$work/info" && pass "$family: info prints the plan" || { fail "$family info"; cat "$work/info"; }
done
"$moed" info --model "$models/tiny-deepseek_v3" --host-budget 25% --json >"$work/info.json" 2>&1 &&
  /usr/bin/python3 - "$work/info.json" <<'PY' && pass "info --json: per-layer kinds and tiers" || fail "info --json"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["family"] == "deepseek_v3"
assert [l["ffn"] for l in r["layers"]] == ["dense", "moe", "moe"], r["layers"]
assert r["layers"][0]["attention"] == "mla" and r["layers"][0]["routed_experts"] == 0
assert r["tiers"]["disk"] == r["bytes"]["routed_experts"] * 3 // 4, r["tiers"]
PY

# Fine-grained FP8 checkpoints (DeepSeek-V3 and Qwen3's FP8 releases' format) through the
# binary: prefill logits over the reference's greedy continuation pick its next token at every
# step, the same bits at a 25% budget, the formats in `moed info`, and a checkpoint whose config
# lost its quantization_config refused naming the tensor.
for family in deepseek_v3 qwen3_moe; do
  model="$models/tiny-$family-fp8"
  ids=$(/usr/bin/python3 -c "import json; g = json.load(open('$golden/$family-fp8.greedy.json')); print(','.join(map(str, g['prompt'] + g['generated'][:-1])))")
  if "$moed" logits --model "$model" --tokens "$ids" --out "$work/$family-fp8.npy" 2>"$work/err" &&
     /usr/bin/python3 - "$work/$family-fp8.npy" "$golden/$family-fp8.greedy.json" <<'PY'
import json, sys, numpy as np
got, golden = np.load(sys.argv[1]), json.load(open(sys.argv[2]))
picked = got.argmax(-1)[len(golden["prompt"]) - 1:].tolist()
assert picked == golden["generated"], (picked, golden["generated"])
PY
  then pass "$family fp8: logits pick the reference's greedy tokens"; else fail "$family fp8 logits"; cat "$work/err"; fi
  "$moed" logits --model "$model" --tokens "$ids" --out "$work/$family-fp8-quarter.npy" --host-budget 25% 2>/dev/null
  cmp -s "$work/$family-fp8.npy" "$work/$family-fp8-quarter.npy" && pass "$family fp8: bit-identical at a 25% budget" || fail "$family fp8 budgeted logits differ"
done
"$moed" info --model "$models/tiny-qwen3_moe-fp8" >"$work/info" 2>&1 &&
  grep -q "^weights: safetensors; bf16 .*f8_e4m3 .* (block scales included, one per 32 x 48 elements)" "$work/info" &&
  pass "fp8 info: formats and scale blocks" || { fail "fp8 info"; cat "$work/info"; }
"$moed" info --model "$models/tiny-qwen3_moe-fp8" --host-budget 25% --json >"$work/info.json" 2>&1 &&
  /usr/bin/python3 - "$work/info.json" <<'PY' && pass "fp8 info --json: blocks, and a quarter of the experts cached as this CPU holds them" || fail "fp8 info --json"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["fp8_weight_block"] == [32, 48], r["fp8_weight_block"]
assert abs(r["tiers"]["disk"] - r["bytes"]["routed_experts"] * 3 / 4) <= 1, r
b = r["bytes"]
cached = r["tiers"]["experts_cached"]
assert r["tiers"]["host"] > cached + b["dense_layers"], r
if r["fp8_held_as"] in ("fp8 rows", "fp8 panels"):
    # One byte a weight and a scale per column and 48 columns: a quarter of the experts is a
    # little over a quarter of their stored bytes (which hold a scale per 32 x 48 elements).
    assert 0.25 * b["routed_experts"] < cached < 0.3 * b["routed_experts"], r
else:
    # Widened to bf16: a quarter of them is about half their stored bytes.
    assert r["fp8_held_as"] == "bf16", r
    assert cached >= 0.45 * b["routed_experts"], r
PY
# IQ1_S experts are held as the Q6_K blocks they are rewritten into (210 bytes a block of 256
# against 50 stored): a quarter of them cached is 1.05 times their stored bytes.
"$moed" info --model "$models/tiny-iq1_s.gguf" --host-budget 25% --json >"$work/info-iq1.json" 2>&1 &&
  /usr/bin/python3 - "$work/info-iq1.json" <<'PY' && pass "iq1_s info --json: experts cached as held, in q6_K blocks" || fail "iq1_s info --json"
import json, sys
r = json.load(open(sys.argv[1]))
stored = r["bytes"]["routed_experts"]
assert r["bytes_by_weight_format"].keys() == {"f32", "iq1_s"}, r
assert abs(r["tiers"]["experts_cached"] - stored * 210 / 50 / 4) <= 1, r
assert abs(r["tiers"]["disk"] - stored * 3 / 4) <= 1, r
PY
# Streamed IQ2_S experts are cached as the file stores them where this CPU computes stored rows
# (AVX2 or AVX-512 VNNI): the budget, a quarter of them as row tiles (146 bytes a block of 256
# against 82 stored), then holds more than a quarter of them.
"$moed" info --model "$models/tiny-iq2_s.gguf" --host-budget 25% --json >"$work/info-iq2.json" 2>&1 &&
  /usr/bin/python3 - "$work/info-iq2.json" <<'PY' && pass "iq2_s info --json: a quarter of the experts as tiles, cached as stored" || fail "iq2_s info --json"
import json, sys
r = json.load(open(sys.argv[1]))
stored = r["bytes"]["routed_experts"]
cached = r["tiers"]["experts_cached"]
assert abs(cached - stored * 146 / 82 / 4) <= 1, r
if r["tiers"]["experts_cached_as_stored"]:
    assert r["tiers"]["disk"] == stored - cached, r
else:
    assert abs(r["tiers"]["disk"] - stored * 3 / 4) <= 1, r
PY
"$moed" info --model "$models/tiny-iq2_s.gguf" --host-budget 25% >"$work/info" 2>&1 &&
  grep -Eq "of experts cached( as the file stores them)?\), disk" "$work/info" &&
  pass "iq2_s info: tiers line" || { fail "iq2_s info"; cat "$work/info"; }
cp -r "$models/tiny-qwen3_moe-fp8" "$work/fp8-unlabelled"
/usr/bin/python3 - "$work/fp8-unlabelled/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
del c["quantization_config"]
json.dump(c, open(sys.argv[1], "w"))
PY
expect_error "fp8 tensors without quantization_config" \
  "model.safetensors: tensor 'model.layers.0.mlp.experts.0.down_proj.weight' is F8_E4M3, but .*config.json has no quantization_config" \
  "$moed" logits --model "$work/fp8-unlabelled" --tokens 1 --out "$work/x.npy"
# GGUF files through the binary: logits against reference.py on the dequantized weights (f32
# within 1e-5; quantized: all but two rows within 5%, as test_gguf_model explains), the same
# logits at a 25% budget, a split file, info, and refusals that name the file and the fault.
for file in tiny-f32 tiny-q4_k_m tiny-deepseek_v3-q8_0 tiny-qwen2_moe-q4_k_m; do
  if "$moed" logits --model "$models/$file.gguf" --tokens "$tokens" --out "$work/$file.npy" --kv-dtype f32 2>"$work/err" &&
     /usr/bin/python3 - "$work/$file.npy" "$golden/gguf/$file.logits.npy" "$file" <<'PY'
import sys, numpy as np
got, want, name = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
assert got.shape == want.shape, (got.shape, want.shape)
rows = np.abs(got - want).max(axis=1) / np.abs(want).max()
if name.endswith("f32"):
    assert rows.max() <= 1e-5, rows.max()
else:
    assert (rows > 0.05).sum() <= 2, rows
    assert (got.argmax(-1) != want.argmax(-1)).sum() <= 2
PY
  then pass "gguf $file: logits match the reference on the dequantized weights"; else fail "gguf $file logits"; cat "$work/err"; fi
  "$moed" logits --model "$models/$file.gguf" --tokens "$tokens" --out "$work/$file-quarter.npy" --kv-dtype f32 --host-budget 25% 2>/dev/null
  cmp -s "$work/$file.npy" "$work/$file-quarter.npy" && pass "gguf $file: bit-identical at a 25% budget" || fail "gguf $file budgeted logits differ"
done
a=$("$moed" tokenize --model "$models/tiny-q8_0.gguf" --text "Hello world, 123 ünï")
b=$("$moed" tokenize --model "$models/tiny-f32" --text "Hello world, 123 ünï")
[[ -n $a && $a == "$b" ]] && pass "gguf tokenizer from metadata: the ids of the tokenizer.json it came from" || fail "gguf tokenize ($a vs $b)"
out=$("$moed" generate --model "$models/tiny-deepseek_v3-q8_0.gguf" --prompt "Hello world 123" -n 6 --print-ids 2>"$work/ids")
[[ $? -eq 0 ]] && [[ $(tr ',' '\n' <"$work/ids" | grep -c .) -ge 1 ]] && pass "gguf generate (deepseek2, q8_0)" || fail "gguf generate: $(cat "$work/ids")"
"$moed" logits --model "$models/tiny-bytelevel-q6_k-00001-of-00003.gguf" --tokens 1,2,3 --out "$work/split.npy" 2>"$work/err" &&
  pass "gguf split in three files, opened from the first" || { fail "gguf split"; cat "$work/err"; }
"$moed" info --model "$models/tiny-q4_k_m.gguf" >"$work/info" 2>&1 &&
  grep -q "^weights: GGUF, architecture llama; f32 .*q4_K .*q6_K" "$work/info" && grep -q "^family: mixtral" "$work/info" &&
  pass "gguf info: architecture, formats and plan" || { fail "gguf info"; cat "$work/info"; }
cp "$models/tiny-q8_0.gguf" "$work/cut.gguf" && truncate -s 1000000 "$work/cut.gguf"
expect_error "truncated gguf" "cut.gguf: byte 13581: tensor 'blk.0.ffn_gate_exps.weight'" "$moed" logits --model "$work/cut.gguf" --tokens 1 --out "$work/x.npy"
echo "not a model" >"$work/text.gguf"
expect_error "gguf with a bad magic" "text.gguf: byte 0: bad magic" "$moed" logits --model "$work/text.gguf" --tokens 1 --out "$work/x.npy"
expect_error "daemon: missing gguf" "/nonexistent.gguf: no such GGUF file" "$moed" --model /nonexistent.gguf --socket "$work/never.sock"

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
printf '%s\n' '"Hello world"' '"two\nlines"' >"$work/texts.jsonl"
out=$("$moed" tokenize --model "$models/tiny-f32" --jsonl "$work/texts.jsonl")
first=$("$moed" tokenize --model "$models/tiny-f32" --text "Hello world")
/usr/bin/python3 -c "
import json, sys
lines = [json.loads(l) for l in sys.argv[1].splitlines()]
assert len(lines) == 2 and ','.join(map(str, lines[0]['ids'])) == sys.argv[2], lines
assert lines[1]['decoded'] == '<s> two\nlines', lines[1]" "$out" "$first" &&
  pass "tokenize --jsonl: ids and decoded text per line" || fail "tokenize --jsonl: $out"
printf '%s\n' '"ok"' 'not json' >"$work/bad.jsonl"
expect_error "tokenize --jsonl, a bad line" "bad.jsonl line 2: not a JSON string" "$moed" tokenize --model "$models/tiny-f32" --jsonl "$work/bad.jsonl"
expect_error "tokenize without a text" "give either --text or --jsonl" "$moed" tokenize --model "$models/tiny-f32"

# memtier through the binary: budgets, both readers, a trace and its simulation.
"$moed" logits --model "$models/tiny-f32" --tokens "$tokens" --out "$work/full.npy" 2>/dev/null
"$moed" logits --model "$models/tiny-f32" --tokens "$tokens" --out "$work/quarter.npy" --host-budget 25% --reader pread 2>/dev/null
"$moed" logits --model "$models/tiny-f32" --tokens "$tokens" --out "$work/ring.npy" --host-budget 3MiB 2>/dev/null
cmp -s "$work/full.npy" "$work/quarter.npy" && cmp -s "$work/full.npy" "$work/ring.npy" &&
  pass "logits bit-identical at 25% (pread) and 3MiB (ring) budgets" || fail "budgeted logits differ"

"$moed" bench --model "$models/tiny-f32" --host-budget 25% --json --bandwidth-mib 64 \
  --prompt-tokens 16 --decode-tokens 32 >"$work/bench.json" 2>/dev/null
# Stated overhead above the budget: 48 MiB (process, libraries, oneDNN code, short KV caches),
# the loader's staging arena (reported; its reading window plus two blocks) and three expert
# blocks (the block being packed and two pool spares).
if [[ -n ${MOED_SANITIZED:-} ]]; then
  echo "skip bench RSS bound: sanitizer build (checked in the normal build)"
elif /usr/bin/python3 - "$work/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
limit = r["host_budget_bytes"] + 48 * 2**20 + r["staging_bytes"] + 3 * r["expert_block_bytes"]
assert r["peak_rss_bytes"] <= limit, (r["peak_rss_bytes"], limit)
assert 0 < r["host_hit_rate"] < 1 and r["decode_tokens_per_s"] > 0
stages = r["load_stages"]
assert sorted(stages) == ["demand", "prefetch", "raised_prefetch"], stages
assert sum(s["loads"] for s in stages.values()) > 0, stages
for s in stages.values():
    assert all(s[k] >= 0 for k in ("queued_seconds", "reading_seconds", "staged_seconds", "packing_seconds")), s
PY
then pass "bench at 25%: peak RSS within budget + stated overhead"; else fail "bench RSS"; cat "$work/bench.json"; fi
# Misses at 25% are read during decode; the busy time is taken inside each round's clock, and
# reads that overlap count once, so it can never exceed the rounds' time.
/usr/bin/python3 -c '
import json, sys
share = json.load(open(sys.argv[1]))["disk_busy_share_of_decode"]
assert 0 < share <= 1, share' "$work/bench.json" &&
  pass "bench at 25%: disk busy share of decode within (0, 1]" || fail "bench disk busy share"
# Each horizon's outcomes add up to its reads, and they add up to the totals.
/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
hs = r["prefetch_horizons"]
assert [h["horizon"] for h in hs] == [1, 2], hs
for h in hs:
    assert h["hits"] + h["late"] + h["wasted"] + h["cancelled"] <= h["issued"], h
    assert h["used"] <= h["predicted"], h
assert sum(h["issued"] for h in hs) == r["prefetch_issued"] > 0, r
assert sum(h["wasted"] + h["cancelled"] for h in hs) == r["prefetch_wasted"], r' "$work/bench.json" &&
  pass "bench at 25%: prefetch outcomes per horizon" || fail "bench prefetch horizons"

"$moed" generate --model "$models/tiny-f32" --prompt "Hello" -n 24 --host-budget 25% --no-prefetch \
  --trace "$work/trace.jsonl" --temperature 0.7 --seed 1 >/dev/null 2>&1
lines=$(wc -l <"$work/trace.jsonl")
[[ $lines -gt 0 && $((lines % 4)) -eq 0 ]] && pass "trace written ($lines lines)" || fail "trace ($lines lines)"
if "$moectl" trace simulate "$work/trace.jsonl" --blocks 4,8,16 --json >"$work/sim.json" &&
   /usr/bin/python3 - "$work/sim.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
by = {(x["policy"], x["blocks"]): x["hits"] for x in r["results"]}
for b in (4, 8, 16):
    assert by[("belady", b)] >= max(by[(p, b)] for p in ("lru", "lfu", "arc", "tinylfu"))
assert r["layers"] == 4
PY
then pass "moectl trace simulate: belady bounds lru, lfu, arc and tinylfu"; else fail "moectl trace simulate"; fi
"$moectl" trace simulate "$work/trace.jsonl" --blocks 8 | grep -q "belady" && pass "simulate prints a table" || fail "simulate table"
"$moectl" trace simulate "$work/trace.jsonl" --blocks 4,8 --auto-pin 0.5 --prefetch 2 --json | /usr/bin/python3 -c "
import json, sys
r = json.load(sys.stdin)
assert r['auto_pin'] == 0.5 and r['prefetch']['horizons'] == 2 and len(r['prefetch']['results']) == 8, r
" && pass "moectl trace simulate: automatic pins together with prefetch" || fail "simulate --auto-pin --prefetch"
printf '{"layer": 1, "experts": [2]}\nnot json\n' >"$work/bad.jsonl"
"$moectl" trace simulate "$work/bad.jsonl" >/dev/null 2>"$work/err"
[[ $? -eq 1 ]] && grep -q "bad.jsonl:2" "$work/err" && pass "bad trace line is named" || fail "bad trace"
"$moectl" trace simulate "$work/trace.jsonl" --policies lru,mru >/dev/null 2>"$work/err"
[[ $? -eq 1 ]] && grep -q "'mru' is not one of lru, lfu, arc, tinylfu, belady" "$work/err" && pass "bad simulate policy is named" || fail "bad simulate policy: $(cat "$work/err")"

cp -r "$models/tiny-f32" "$work/notok" && rm "$work/notok/tokenizer.json"
expect_error "missing tokenizer" "tokenizer.json" "$moed" generate --model "$work/notok" --prompt x -n 1
cp -r "$models/tiny-f32" "$work/trunc" && truncate -s 1000000 "$work/trunc/model.safetensors"
expect_error "truncated safetensors" "truncated" "$moed" logits --model "$work/trunc" --tokens 1 --out "$work/x.npy"
expect_error "token id out of range" "outside the vocabulary" "$moed" logits --model "$models/tiny-f32" --tokens 1,512 --out "$work/x.npy"
expect_error "bad token list" "not a token id" "$moed" logits --model "$models/tiny-f32" --tokens 1,x --out "$work/x.npy"
expect_error "a daemon option before a subcommand" "--threads is an option of the daemon; .*moed bench --threads" "$moed" --threads 2 bench --model "$models/tiny-f32"
expect_error "a daemon-only option with a subcommand" "--socket is an option of the daemon, not of moed info" "$moed" --socket /tmp/x.sock info --model "$models/tiny-f32"
expect_error "an unknown quantized-kernel path" "MOED_MAX_QUANT_ISA=avx3 names no path (scalar, avx2, avx512_vnni)" env MOED_MAX_QUANT_ISA=avx3 "$moed" info --model "$models/tiny-f32"
expect_error "an unknown panel path" "MOED_MAX_PANEL_ISA=sse names no path (generic, avx2, avx512)" env MOED_MAX_PANEL_ISA=sse "$moed" info --model "$models/tiny-f32"
if ! grep -qw avx2 /proc/cpuinfo; then
  echo "skip MOED_MAX_PANEL_ISA=avx2: this CPU has no AVX2"
elif ONEDNN_MAX_CPU_ISA=AVX2 MOED_MAX_PANEL_ISA=avx2 "$moed" bench --model "$models/tiny-f32" \
    --bandwidth-mib 64 --prompt-tokens 16 --decode-tokens 8 >/dev/null 2>"$work/err" &&
  grep -q "matmul moed avx2 f32 panels" "$work/err"; then
  pass "MOED_MAX_PANEL_ISA=avx2 with oneDNN at AVX2: f32 in moed's AVX2 panels"
else fail "MOED_MAX_PANEL_ISA=avx2 bench"; cat "$work/err"; fi
if ! grep -qw avx2 /proc/cpuinfo; then
  echo "skip MOED_MAX_QUANT_ISA=avx2: this CPU has no AVX2"
elif MOED_MAX_QUANT_ISA=avx2 "$moed" bench --model "$models/tiny-q4_k_m.gguf" --host-budget 25% \
    --bandwidth-mib 64 --prompt-tokens 16 --decode-tokens 8 >/dev/null 2>"$work/err" &&
  grep -q "matmul moed avx2 .*experts read from disk computed as stored rows" "$work/err"; then
  pass "MOED_MAX_QUANT_ISA=avx2: AVX2 kernels, streamed experts computed as stored rows"
else fail "MOED_MAX_QUANT_ISA=avx2 bench"; cat "$work/err"; fi
if "$moed" bench --model "$models/tiny-q3_k.gguf" --host-budget 25% --bandwidth-mib 64 \
    --prompt-tokens 16 --decode-tokens 8 >/dev/null 2>"$work/err" &&
  grep -q "ggml q3_K blocks as q6_K in 16-row tiles" "$work/err" &&
  { ! grep -qw avx2 /proc/cpuinfo ||
    grep -q "experts read from disk rewritten (q3_K as q6_K) and computed as stored rows" "$work/err"; }; then
  pass "a Q3_K file streamed: its experts rewritten as q6_K"
else fail "Q3_K bench"; cat "$work/err"; fi
expect_error "bad budget" "not a size" "$moed" logits --model "$models/tiny-f32" --tokens 1 --out "$work/x.npy" --host-budget lots
expect_error "budget below minimum" "below this model's minimum" "$moed" logits --model "$models/tiny-f32" --tokens 1 --out "$work/x.npy" --host-budget 64KiB
"$moed" logits --model /nonexistent --tokens 1 --out "$work/x.npy" >/dev/null 2>"$work/err"
[[ $? -ne 0 ]] && grep -q "does not exist: /nonexistent" "$work/err" && pass "missing model directory is refused, named" || fail "missing model directory: $(cat "$work/err")"
expect_error "daemon: missing model directory" "/nonexistent: no such directory" "$moed" --model /nonexistent --socket "$work/never.sock"
expect_error "daemon: model path that is a file" "config.json: not a directory" "$moed" --model "$models/tiny-f32/config.json" --socket "$work/never.sock"
"$moed" --help | grep -q "logits" && pass "--help lists the commands" || fail "--help"
# OMP_WAIT_POLICY=active alone would let libgomp spin without end: moed bounds it and says so; a
# GOMP_SPINCOUNT of the user's is kept, without a word.
OMP_WAIT_POLICY=active "$moed" --help >/dev/null 2>"$work/omp" &&
  grep -q "running with GOMP_SPINCOUNT=10000" "$work/omp" &&
  OMP_WAIT_POLICY=active GOMP_SPINCOUNT=100 "$moed" --help >/dev/null 2>"$work/omp-count" &&
  ! grep -q GOMP_SPINCOUNT "$work/omp-count" &&
  pass "OMP_WAIT_POLICY=active: the spin bounded, with a notice" || fail "OMP_WAIT_POLICY=active: $(cat "$work/omp")"

finish
