#!/usr/bin/python3
"""moed against llama.cpp on the same GGUF files, threads and machine: prefill and decode
tokens/s of each, in alternating rounds (this VM's speed drifts), and both as a share of the
decode bound that `moed bench` measures in the same run (memory read bandwidth / bytes a decode
token reads). llama.cpp is its prebuilt CPU library from npm (@node-llama-cpp/linux-x64, installed
by scripts/install-deps.sh), driven through tests/interop/llama_cpp.py with its defaults: mmap,
f16 KV cache, its repacked kernels. moed runs with everything resident and a bf16 KV cache.

  scripts/bench-llamacpp.py build/bench-models/bench-mixtral-q8_0.gguf \\
      build/bench-models/bench-mixtral-q4_k_m.gguf --rounds 3

The bench GGUF files: scripts/make-tiny-model.py --size bench --out build/bench-models/bench-mixtral
then scripts/hf-to-gguf.py --model build/bench-models/bench-mixtral --type q8_0 (or q4_k_m, bf16)
--out build/bench-models/bench-mixtral-q8_0.gguf. Prints one line per model and round, a summary
per model (medians: a round can go wrong), and with --json the rounds as JSON.

On this 2-vCPU VM, llama.cpp's worker thread, which sleeps between graph computations once its
short poll ends, took milliseconds to wake after the machine had idled for a second: a tiny
model then decoded at 60 tokens/s instead of 1900, and about one bench-model round in six ran at
a third of its usual rate. moed's workers spin (OMP_WAIT_POLICY=active). The bench models'
8 ms tokens make that the exception rather than the rule; read the rounds, not only the
medians."""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
from llama_cpp import LlamaCpp  # noqa: E402


def moed_bench(moed, model, threads, prompt_tokens, decode_tokens):
    result = subprocess.run([moed, "bench", "--model", model, "--threads", str(threads),
                             "--prompt-tokens", str(prompt_tokens), "--decode-tokens",
                             str(decode_tokens), "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit("bench-llamacpp: moed bench on %s failed:\n%s" % (model, result.stderr))
    return json.loads(result.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="GGUF files (the first of a split set)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per model")
    ap.add_argument("--moed", default=os.path.join(ROOT, "build", "daemon", "moed"))
    ap.add_argument("--json", action="store_true", help="print the rounds as JSON at the end")
    args = ap.parse_args()
    for name in ("threads", "prompt_tokens", "decode_tokens", "rounds"):
        if getattr(args, name) < 1:
            sys.exit("bench-llamacpp: --%s must be at least 1" % name.replace("_", "-"))
    for model in args.models:
        if not os.path.isfile(model):
            sys.exit("bench-llamacpp: %s: no such file" % model)
    if not os.access(args.moed, os.X_OK):
        sys.exit("bench-llamacpp: %s is not built (scripts/build.sh build)" % args.moed)

    llama = LlamaCpp()
    report = []
    for model in args.models:
        name = os.path.basename(model)
        print("bench-llamacpp: %s, %d threads, %d prompt tokens, %d decode steps"
              % (name, args.threads, args.prompt_tokens, args.decode_tokens), file=sys.stderr)
        # A first, untimed pass reads the file into the page cache for llama.cpp's mmap.
        llama.time_generation(model, 16, 4, args.threads, 1)
        rounds = []
        for r in range(args.rounds):
            ours = moed_bench(args.moed, model, args.threads, args.prompt_tokens,
                              args.decode_tokens)
            prefill_s, decode_s = llama.time_generation(model, args.prompt_tokens,
                                                        args.decode_tokens, args.threads, 1)[0]
            bound = ours["decode_bound_tokens_per_s"]
            entry = {
                "model": name, "round": r + 1,
                "bound_tokens_per_s": bound,
                "moed_prefill_tokens_per_s": ours["prefill_tokens_per_s"],
                "moed_decode_tokens_per_s": ours["decode_tokens_per_s"],
                "llama_cpp_prefill_tokens_per_s": args.prompt_tokens / prefill_s,
                "llama_cpp_decode_tokens_per_s": args.decode_tokens / decode_s,
            }
            rounds.append(entry)
            print("  round %d: decode moed %.1f tok/s (%.0f%% of bound), llama.cpp %.1f (%.0f%%); "
                  "prefill moed %.0f tok/s, llama.cpp %.0f; bound %.1f tok/s"
                  % (r + 1, entry["moed_decode_tokens_per_s"],
                     100 * entry["moed_decode_tokens_per_s"] / bound,
                     entry["llama_cpp_decode_tokens_per_s"],
                     100 * entry["llama_cpp_decode_tokens_per_s"] / bound,
                     entry["moed_prefill_tokens_per_s"], entry["llama_cpp_prefill_tokens_per_s"],
                     bound))
        decode = statistics.median(e["moed_decode_tokens_per_s"] / e["llama_cpp_decode_tokens_per_s"]
                                   for e in rounds)
        prefill = statistics.median(e["moed_prefill_tokens_per_s"] / e["llama_cpp_prefill_tokens_per_s"]
                                    for e in rounds)
        print("%s: moed / llama.cpp, median of %d rounds: decode %.2fx, prefill %.2fx"
              % (name, len(rounds), decode, prefill))
        report += rounds
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
