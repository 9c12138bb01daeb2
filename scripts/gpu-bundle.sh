#!/usr/bin/env bash
# Builds the GPU test binary here and bundles it for a machine with a GPU but none of our Debian
# packages (the `device` tool's H100/H200: CUDA and its cuBLAS are there, oneDNN is not).
# Writes .gpu/ (ignored by git): the binary, the non-CUDA libraries it needs, and run.sh.
# On the GPU machine, from the repository root:   .gpu/run.sh
# (with the device tool: carry [".gpu"], command ".gpu/run.sh").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
"$here/build.sh" "$root/build" >/dev/null
ninja -C "$root/build" test_cuda_kernels >/dev/null
out="$root/.gpu"
rm -rf "$out"
mkdir -p "$out/lib"
cp "$root/build/tests/test_cuda_kernels" "$out/"
# Everything it links except glibc, the C++ runtime (newer there) and CUDA's own libraries,
# which the GPU machine provides.
ldd "$out/test_cuda_kernels" | awk '/=> \// {print $3}' |
  grep -Ev '/lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s|cuda|cudart|cublas|cublasLt)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the CUDA kernel tests against the CPU kernels; fails if no GPU is usable.
here=$(cd "$(dirname "$0")" && pwd)
cuda_lib=$(dirname "$(ls /usr/local/cuda/lib64/libcublas.so* 2>/dev/null | head -1)" 2>/dev/null || true)
export LD_LIBRARY_PATH="$here/lib:${cuda_lib:-/usr/local/cuda/lib64}:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
MOED_REQUIRE_GPU=1 exec "$here/test_cuda_kernels" "$@"
RUN
chmod +x "$out/run.sh"
exclude=$(git -C "$root" rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
echo "gpu-bundle: $(du -sh "$out" | cut -f1) in $out; on the GPU machine run .gpu/run.sh"
