#!/usr/bin/env bash
# Builds the operators with CMake + find_package(Torch) from the same source list as setup.py,
# links a libtorch C++ program against them and runs it under ctest.
# Environment: TORCH_CUDA_ARCH_LIST (default 9.0: compiling each CUDA file once is enough to test
# the CMake build; setup.py's default is 8.0;9.0), DIVA_FORCE_CPU=1 (no CUDA files).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
build_env=$($py scripts/build_env.py --cmake-env)  # (a bad TORCH_CUDA_ARCH_LIST stops here)
eval "$build_env"
args=(-S . -B cmake-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE_PREFIX"
      -DCMAKE_MAKE_PROGRAM="$NINJA")
if [ -n "${CUDA_HOME:-}" ]; then
  args+=(-DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc"
         -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS_CMAKE" -DTORCH_CUDA_ARCH_LIST="$CUDA_ARCHS_TORCH"
         -DCUDA_NVRTC_LIB="$NVRTC_LIB" -DDIVA_CUDA_EXTRA_INCLUDE="$NVIDIA_INCLUDE")
else
  args+=(-DDIVA_WITH_CUDA=OFF)
fi
.venv/bin/cmake "${args[@]}" > cmake-build.log 2>&1 || { cat cmake-build.log; exit 1; }

.venv/bin/cmake --build cmake-build -j "$(nproc)" >> cmake-build.log 2>&1 || { tail -50 cmake-build.log; exit 1; }
LD_LIBRARY_PATH="$NVIDIA_LIB:${LD_LIBRARY_PATH:-}" .venv/bin/ctest --test-dir cmake-build --output-on-failure
