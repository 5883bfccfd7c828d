#!/usr/bin/env bash
# Compiles every csrc/cuda/*.cu with nvcc (compile only, no GPU needed) against the installed torch's
# headers, so CUDA code cannot rot unseen on GPU-less CI. The CPU wheel lacks one generated header,
# c10/cuda/impl/cuda_cmake_macros.h; a build-only include dir supplies it.
# Targets: the arch list setup.py builds for (TORCH_CUDA_ARCH_LIST when set, else
# "8.0;9.0;10.0;12.0+PTX": SASS sm_80, sm_90, sm_100, sm_120 and compute_120 PTX), from
# hatch_ext/_build_config.py, so CI compiles exactly what a default `pip install` does.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null; then echo "nvcc not found: skipping the CUDA compile check"; exit 0; fi
out=$(mktemp -d)
mkdir -p "$out/include/c10/cuda/impl"
echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$out/include/c10/cuda/impl/cuda_cmake_macros.h"
torch_inc=$(python -c 'from torch.utils.cpp_extension import include_paths; print(" ".join("-I"+p for p in include_paths()))')
py_inc=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
gencode=$(python hatch_ext/_build_config.py --gencode)
echo "CUDA targets ($(python hatch_ext/_build_config.py --archs)): $gencode"
status=0
for f in csrc/cuda/*.cu; do
  echo "nvcc -c $f"
  if ! nvcc -c "$f" -o "$out/$(basename "$f").o" -std=c++20 -O2 \
      $gencode --threads 0 \
      -I"$out/include" $torch_inc -I"$py_inc" -DHATCH_WITH_CUDA -D_GLIBCXX_USE_CXX11_ABI=1 \
      --expt-relaxed-constexpr -Xcompiler -fPIC; then
    status=1
  fi
done
rm -rf "$out"
exit $status
