#!/usr/bin/env bash
# Builds the CMake target (libhatch_ops against libtorch) and runs an op from C++.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/cmake -j"$(nproc)"
./build/cmake/hatch_overlap_example
