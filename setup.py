"""Builds diva_ext._C with torch.utils.cpp_extension (ninja).

CUDA sources are compiled whenever nvcc and a CUDA build of torch are present; a GPU is not
needed to compile. DIVA_FORCE_CPU=1 builds the CPU kernels only. TORCH_CUDA_ARCH_LIST overrides
the default architectures (sm_80 and sm_90).

The package's metadata (name, version, dependencies, extras, the `diva` command) is in
pyproject.toml; this file only describes the extensions. It must compile against the torch that
will import it: scripts/torch_for_build.py refuses isolated builds and a torch outside the
supported range, saying what to run (`pip install --no-build-isolation .`).
"""

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent.resolve()
sys.path.insert(0, str(ROOT / "scripts"))
import build_env  # noqa: E402  (sets CUDA_HOME before torch.utils.cpp_extension reads it)

build_env.configure()

import torch_for_build  # noqa: E402

torch = torch_for_build.check(ROOT)
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

sources = build_env.sources(ROOT)
with_cuda = build_env.cuda_enabled()
cxx_flags = [build_env.CXX_STD_FLAG, "-O3", "-fno-math-errno", "-DDIVA_PYTHON_MODULE"]
nvcc_flags = [build_env.CXX_STD_FLAG, "-O3", "-DDIVA_PYTHON_MODULE", "--expt-relaxed-constexpr"]
include_dirs = [str(ROOT / "csrc" / "include")]
if with_cuda:
    include_dirs += build_env.cuda_extra_include_dirs()
    extension = CUDAExtension(
        "diva_ext._C",
        [str(s.relative_to(ROOT)) for s in sources["cpp"] + sources["cu"]],
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags + ["-DDIVA_WITH_CUDA"], "nvcc": nvcc_flags},
        py_limited_api=False,
    )
else:
    extension = CppExtension(
        "diva_ext._C",
        [str(s.relative_to(ROOT)) for s in sources["cpp"]],
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
    )

ext_modules = [extension]

# Test-only: the CUDA kernels compiled for the CPU through the CUDA-execution-model emulation
# (csrc/emulation/, docs/design.md §6), registered as torch.ops.diva_ext_emulated.*.
# A wheel (`pip wheel`, `pip install .`) leaves it out unless DIVA_BUILD_EMULATION=1: it is for
# the repository's tests, and takes a build of its own.
emulation_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "emulation").glob("*.cpp"))
building_wheel = "bdist_wheel" in sys.argv[1:] and os.environ.get("DIVA_BUILD_EMULATION") != "1"
if emulation_sources and os.environ.get("DIVA_SKIP_EMULATION") != "1" and not building_wheel:
    ext_modules.append(
        CppExtension(
            "diva_ext._cuda_emulated",
            emulation_sources,
            include_dirs=[str(ROOT / "csrc" / "include"), str(ROOT / "csrc")],
            extra_compile_args={"cxx": build_env.EMULATION_CXX_FLAGS},
        )
    )

# The editable install (scripts/setup.sh) only registers the package and the `diva` command;
# the extensions are then built in place by `setup.py build_ext --inplace`, whose ninja build
# folder makes rebuilds incremental.
if os.environ.get("DIVA_METADATA_ONLY") == "1":
    ext_modules = []

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
