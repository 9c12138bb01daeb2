// moed: serves Mixture-of-Experts models from GPU, RAM and NVMe tiers. This entry point also
// carries the one-shot development commands (logits, generate, tokenize, bench, perplexity).
#include <limits.h>
#include <malloc.h>
#include <omp.h>
#include <strings.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "commands.hpp"
#include "daemon.hpp"
#include "moed/kernels/panel_matmul.hpp"
#include "moed/kernels/quant_dot.hpp"

namespace {
constexpr const char* kModelHelp =
    "Hugging Face model directory, or GGUF file (the first of its splits)";
constexpr const char* kThreadsHelp =
    "compute threads; also the most that pack an expert compute waits on (default: one per "
    "physical core, less one for the disk tier when experts stream from disk)";

// libgomp reads its wait policy once, when it loads. Under its default policy a worker spins
// only 100 times before it sleeps where the compute thread's team and the loader's packer's
// (on more than 2 cores) oversubscribe the cores, and each parallel region of a decode step
// (dozens per token: about 80 when this was measured, fewer since) then wakes its worker
// through the kernel: 22 us per region on the 2-core VM against 4.5 us spinning. moed asks for the
// active policy with 10000 spins, about 100 us (a pause takes 10 ns there): the gaps between a
// step's regions (attention, routing, an expert's imbalance) outlast 1000 spins, with which the
// worker slept at nearly every region (19169 context switches in a resident Q4_K_M bench against
// 751; decode 0.53 -> 0.76 of the bound, Q8_0 0.66 -> 0.86, a 400-token request 3.0 -> 2.3 s).
// Under two CPU hogs or two compilers the request took 5.6-9.8 s against 7.5-8.6 s with 1000: a
// spin this short wastes at most 100 us of a busy core per region, where 300000 spins (3 ms) once
// made it 25 s instead of 8. Where the packer's team and compute's outnumber the cores (more than 2
// cores, after a demand load), libgomp still spins its throttled min(1000, count). An idle daemon
// still sleeps. A user's own settings are kept. The executable is run by its real path so that the
// process keeps its name; if anything fails, moed runs on with libgomp's defaults. Other OpenMP
// runtimes read other variables (LLVM's would spin forever under "active"), so this is for libgomp
// only. One user setting is bounded: OMP_WAIT_POLICY=active without GOMP_SPINCOUNT, with which
// libgomp's idle threads spin without end (its default count for "active" is 30 billion) and
// take the cores decode's own team runs on: a resident Q8_0 bench on 2 cores decoded 52 tokens/s
// against 246-279. moed then adds GOMP_SPINCOUNT=10000 and says so.
void set_openmp_wait_policy(char** argv) {
#ifdef _LIBGOMP_OMP_LOCK_DEFINED
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const bool unbounded_spin = policy != nullptr && strcasecmp(policy, "active") == 0 &&
                              std::getenv("GOMP_SPINCOUNT") == nullptr;
  if (policy != nullptr && !unbounded_spin) return;
  char path[PATH_MAX];
  const ssize_t length = readlink("/proc/self/exe", path, sizeof path - 1);
  if (length <= 0) return;
  path[length] = '\0';
  if (unbounded_spin)
    std::fprintf(stderr,
                 "moed: OMP_WAIT_POLICY=active without GOMP_SPINCOUNT lets libgomp's idle threads "
                 "spin without end, on the cores moed decodes on; running with "
                 "GOMP_SPINCOUNT=10000 (set GOMP_SPINCOUNT to choose another count)\n");
  if (setenv("OMP_WAIT_POLICY", "active", 1) != 0 || setenv("GOMP_SPINCOUNT", "10000", 0) != 0)
    return;
  execv(path, argv);
  std::fprintf(stderr, "moed: could not restart with OMP_WAIT_POLICY=active (%s: %s)\n", path,
               std::strerror(errno));
#else
  (void)argv;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moed::cli;
  set_openmp_wait_policy(argv);
  // Weight blocks are MiB-sized and come and go as the host tier evicts them. A fixed mmap
  // threshold makes glibc map each one separately and return it on free; its default adaptive
  // threshold would keep freed blocks in the heap and let RSS creep past the budget.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  CLI::App app{
      "moed: a Mixture-of-Experts inference daemon for one workstation.\n"
      "Without a subcommand it serves the model over HTTP on a Unix socket:\n"
      "  moed --model DIR --socket /run/moed/moed.sock      (or --config /etc/moed/moed.yaml)\n"
      "--model takes a Hugging Face directory (config.json, safetensors, tokenizer.json) or a "
      "GGUF\n"
      "file (NAME.gguf, or NAME-00001-of-0000N.gguf for split files).\n"
      "The subcommands are one-shot tools on a model."};
  app.footer(
      "Environment:\n"
      "  MOED_MAX_QUANT_ISA=avx2|scalar   run the quantized (GGUF) kernels no better than that\n"
      "                                   path, as a CPU without AVX-512 VNNI (or AVX2) would\n"
      "  MOED_MAX_PANEL_ISA=avx2|generic  run moed's panels (bf16/f32 weights where oneDNN has no\n"
      "                                   brgemm) no better than that path, as a CPU without\n"
      "                                   AVX-512 (or AVX2) would; with ONEDNN_MAX_CPU_ISA=AVX2\n"
      "                                   and MOED_MAX_QUANT_ISA=avx2, what an AVX2-only CPU runs");
  app.require_subcommand(0, 1);
  DaemonArgs daemon;
  app.add_option("--config", daemon.config,
                 "YAML config file (see configs/moed.yaml); flags override it")
      ->check(CLI::ExistingFile);
  app.add_option(
      "--model", daemon.model,
      "model to serve: a Hugging Face directory or a GGUF file (the first of its splits)");
  app.add_option("--chat-template", daemon.chat_template,
                 "Jinja chat template file for /v1/chat/completions (default: the model's own)");
  app.add_option("--socket", daemon.socket, "Unix socket path (default /run/moed/moed.sock)");
  app.add_option("--socket-mode", daemon.socket_mode,
                 "octal mode of the socket file (default 0660)");
  app.add_option("--tcp", daemon.tcp, "also listen on HOST:PORT (loopback recommended)");
  app.add_option("--cors-origin", daemon.cors_origins,
                 "let browser pages from this origin (http://localhost:3000, or * for any) read "
                 "the answers (CORS); repeat for more (default: none)");
  app.add_option("--host-budget", daemon.host_budget,
                 "host RAM for weights: a size (24GiB) or a share of the experts (25%)");
  app.add_option("--policy", daemon.policy,
                 "host-tier eviction policy: " + moed::memtier::policy_list() + " (default " +
                     std::string(moed::memtier::kDefaultPolicy) + ")");
  app.add_option("--threads", daemon.threads, kThreadsHelp);
  app.add_option("--max-queue", daemon.max_queue, "waiting requests before 503 (default 64)");
  app.add_option("--max-batch", daemon.max_batch, "sequences decoded together (default 16)");
  // Checked with the config file's values (a validator here would fill the optional in).
  app.add_option("--kv-dtype", daemon.kv_dtype, "KV cache element type: bf16 (default) or f32");
  app.add_option("--prefill-chunk", daemon.prefill_chunk,
                 "prompt tokens prefilled per step between decode steps (default 256)");
  app.add_option("--admin-group", daemon.admin_group, "group whose members may call /admin routes");
  app.add_option("--state-dir", daemon.state_dir,
                 "where routing traces are written (default /var/lib/moed)");

  auto add_model = [](CLI::App* sub, ModelArgs& args) {
    sub->add_option("--model", args.model_dir, kModelHelp)->required()->check(CLI::ExistingPath);
    sub->add_option("--threads", args.threads, kThreadsHelp)->check(CLI::NonNegativeNumber);
    sub->add_option("--host-budget", args.host_budget,
                    "host RAM for weights: a size (512MiB, 2GiB) or a share of the routed experts' "
                    "bytes (25%); default: everything resident");
    sub->add_option("--policy", args.policy,
                    "host-tier eviction policy: " + moed::memtier::policy_list() + " (default " +
                        std::string(moed::memtier::kDefaultPolicy) + ")")
        ->check(CLI::IsMember(moed::memtier::policy_names()));
    sub->add_option("--reader", args.reader,
                    "disk-tier engine: io_uring (default; falls back to pread if refused) or pread")
        ->check(CLI::IsMember({"io_uring", "pread"}));
    sub->add_option("--queue-depth", args.queue_depth, "disk reads in flight (default 64)")
        ->check(CLI::Range(1, 4096));
    sub->add_flag("--no-prefetch", args.no_prefetch,
                  "do not predict and prefetch the next layers' experts");
    sub->add_option("--prefetch-horizon", args.prefetch_horizon,
                    "layers ahead whose experts are predicted and read (1 or 2; default 2)")
        ->check(CLI::Range(1, 2));
    sub->add_option("--kv-dtype", args.kv_dtype, "KV cache element type: bf16 (default) or f32")
        ->check(CLI::IsMember({"bf16", "f32"}));
    sub->add_option("--trace", args.trace,
                    "write the routing decisions as JSON Lines to this file");
  };

  LogitsArgs logits;
  auto* logits_cmd = app.add_subcommand(
      "logits", "Run one prefill over token ids and write float32 logits [n_tokens, vocab] (.npy)");
  add_model(logits_cmd, logits);
  logits_cmd->add_option("--tokens", logits.tokens, "comma-separated token ids, e.g. 1,17,42")
      ->required();
  logits_cmd->add_option("--out", logits.out, "output .npy file")->required();

  GenerateArgs generate;
  auto* generate_cmd = app.add_subcommand("generate", "Generate text from a prompt (one-shot)");
  add_model(generate_cmd, generate);
  generate_cmd->add_option("--prompt", generate.prompt, "prompt text")->required();
  generate_cmd->add_option("-n,--max-tokens", generate.max_new, "tokens to generate (default 32)")
      ->check(CLI::Range(1, 1 << 20));
  generate_cmd->add_option("--seed", generate.seed, "sampling seed (default 0)");
  generate_cmd->add_option("--temperature", generate.temperature, "0 is greedy (default 0)")
      ->check(CLI::Range(0.0, 100.0));
  generate_cmd->add_option("--top-k", generate.top_k, "keep the k most likely tokens (0: all)")
      ->check(CLI::NonNegativeNumber);
  generate_cmd
      ->add_option("--top-p", generate.top_p,
                   "nucleus mass in [0, 1]; 0 keeps the most likely token (default 1)")
      ->check(CLI::Range(0.0, 1.0));
  generate_cmd->add_flag("--print-ids", generate.print_ids,
                         "also print the generated ids to stderr");

  TokenizeArgs tokenize;
  auto* tokenize_cmd =
      app.add_subcommand("tokenize",
                         "Print the token ids of a text, comma-separated (or, with --jsonl, of "
                         "many texts as JSON lines)");
  tokenize_cmd->add_option("--model", tokenize.model_dir, kModelHelp)
      ->required()
      ->check(CLI::ExistingPath);
  auto* text_option = tokenize_cmd->add_option("--text", tokenize.text, "text to encode");
  tokenize_cmd
      ->add_option("--jsonl", tokenize.jsonl,
                   "encode every line of this file (each a JSON string) and print one JSON line "
                   "per text: {\"ids\": [...], \"decoded\": the ids decoded with special tokens "
                   "kept}")
      ->check(CLI::ExistingFile)
      ->excludes(text_option);
  tokenize_cmd->add_flag("--no-special", tokenize.no_special,
                         "do not add BOS or other template tokens");

  BenchArgs bench;
  auto* bench_cmd = app.add_subcommand(
      "bench", "Measure prefill and decode tokens/s against the memory-bandwidth bound");
  add_model(bench_cmd, bench);
  bench_cmd->add_option("--prompt-tokens", bench.prompt_tokens, "prefill length (default 512)");
  bench_cmd->add_option("--decode-tokens", bench.decode_tokens, "decode steps (default 64)");
  bench_cmd->add_option("--bandwidth-mib", bench.bandwidth_mib,
                        "buffer for the bandwidth measurement (default 256)");
  bench_cmd->add_flag("--json", bench.json, "print the report as JSON");
  bench_cmd->add_flag("--drop-caches", bench.drop_caches,
                      "drop the page cache before loading and before the raw read (root only)");

  PerplexityArgs perplexity;
  auto* perplexity_cmd = app.add_subcommand(
      "perplexity",
      "Perplexity of a text file: non-overlapping windows of --context tokens, every token but a "
      "window's first scored given the ones before it (the text is encoded without BOS)");
  add_model(perplexity_cmd, perplexity);
  perplexity_cmd->add_option("--file", perplexity.file, "UTF-8 text file")->required();
  perplexity_cmd->add_option(
      "--context", perplexity.context,
      "window length in tokens (default 512, or the model's max_position_embeddings when smaller)");
  perplexity_cmd->add_flag("--json", perplexity.json, "print the result as JSON");

  InfoArgs info;
  auto* info_cmd = app.add_subcommand(
      "info",
      "Print the model's layer plan (family, per-layer attention and FFN kinds, experts, router) "
      "and its bytes per tier, without loading the weights");
  info_cmd->add_option("--model", info.model_dir, kModelHelp)->required();
  info_cmd->add_option("--host-budget", info.host_budget,
                       "show where the bytes would live under this budget: a size or a share "
                       "of the experts (25%)");
  info_cmd->add_flag("--json", info.json, "print the plan as JSON");

  CLI11_PARSE(app, argc, argv);
  // The daemon's options share names with the subcommands' (--model, --threads, --host-budget),
  // so "moed --threads 2 bench ..." would parse and quietly run the bench on its default.
  if (const auto subcommands = app.get_subcommands(); !subcommands.empty()) {
    const CLI::App& sub = *subcommands.front();
    for (const CLI::Option* option : app.get_options()) {
      if (option->count() == 0 || option == app.get_help_ptr()) continue;
      const std::string name = option->get_name();
      if (sub.get_option_no_throw(name) != nullptr)
        std::fprintf(stderr,
                     "moed: error: %s is an option of the daemon; a subcommand takes its options "
                     "after its name: moed %s %s ...\n",
                     name.c_str(), sub.get_name().c_str(), name.c_str());
      else
        std::fprintf(stderr, "moed: error: %s is an option of the daemon, not of moed %s\n",
                     name.c_str(), sub.get_name().c_str());
      return 1;
    }
  }
  // A kernel-path cap that names no path is refused here rather than ignored by the kernels.
  const auto names_a_path = [](const char* variable, const auto& named, const std::string& names) {
    const char* cap = std::getenv(variable);
    if (cap == nullptr || named(cap)) return true;
    std::fprintf(stderr, "moed: error: %s=%s names no path (%s)\n", variable, cap, names.c_str());
    return false;
  };
  if (!names_a_path(moed::kernels::kMaxQuantIsaVariable, moed::kernels::quant_isa_named,
                    moed::kernels::quant_isa_names()) ||
      !names_a_path(moed::kernels::kMaxPanelIsaVariable, moed::kernels::panel_path_named,
                    moed::kernels::panel_path_names()))
    return 1;
  try {
    if (logits_cmd->parsed()) return run_logits(logits);
    if (generate_cmd->parsed()) return run_generate(generate);
    if (tokenize_cmd->parsed()) return run_tokenize(tokenize);
    if (bench_cmd->parsed()) return run_bench(bench);
    if (perplexity_cmd->parsed()) return run_perplexity(perplexity);
    if (info_cmd->parsed()) return run_info(info);
    return run_daemon(daemon);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moed: error: %s\n", e.what());
    return 1;
  }
}
