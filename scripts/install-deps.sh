#!/usr/bin/env bash
# Installs the Debian packages moed builds and tests with, and the npm packages of the interop
# tests (tests/interop, pinned by its package-lock.json; about 60 MB from the npm registry, once).
# Idempotent: when everything is already installed it only checks (about a second). Needs root
# (or sudo) and the network the first time.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libdnnl-dev ocl-icd-opencl-dev   # oneDNN; its CMake config needs OpenCL headers
  liburing-dev libhwloc-dev libboost-dev libyaml-cpp-dev libsystemd-dev
  nlohmann-json3-dev libcli11-dev libbenchmark-dev libgtest-dev
  libgd-dev                        # moectl trace simulate --plot (PNG)
  python3-numpy python3-jinja2     # test models, numpy reference; jinja2 renders chat templates
                                   # independently for the golden and e2e checks
  clang-16 libclang-rt-16-dev      # scripts/fuzz.sh: libFuzzer targets under ASan/UBSan,
  libomp-16-dev                    # and clang's OpenMP for the kernels they link
  curl systemd util-linux          # e2e tests: curl --unix-socket, systemd-analyze, setpriv
  python3-torch bible-kjv bible-kjv-text   # scripts/train-default-model.py: PyTorch, KJV corpus
  libpcre2-dev libicu-dev          # tokenizers: Unicode split regexes, NFC/NFKC normalizers
  python3-regex                    # scripts/make-pretokenizer-golden.py: an independent \p{L} regex
  python3-jsonschema               # tests/schema: an independent JSON Schema validator
  nodejs                           # tests/interop: Hugging Face's and OpenAI's JS libraries
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Debian's nodejs leaves npm to its own package; NodeSource's bundles it.
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# @huggingface/gguf, @huggingface/tokenizers, openai and llama.cpp's prebuilt libraries
# (@node-llama-cpp/linux-x64) from the npm registry, pinned by tests/interop/package-lock.json.
interop="$(cd "$(dirname "$0")/.." && pwd)/tests/interop"
if [[ ! -f "$interop/node_modules/.package-lock.json" ||
      "$interop/package-lock.json" -nt "$interop/node_modules/.package-lock.json" ]]; then
  echo "install-deps: npm ci in tests/interop"
  npm ci --prefix "$interop" --no-audit --no-fund --loglevel=error --fetch-timeout=60000 \
    --fetch-retries=2
fi
