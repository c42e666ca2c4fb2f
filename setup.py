"""Builds diva_ext._C with torch.utils.cpp_extension (ninja).

CUDA sources are compiled whenever nvcc and a CUDA build of torch are present; a GPU is not
needed to compile. DIVA_FORCE_CPU=1 builds the CPU kernels only. TORCH_CUDA_ARCH_LIST overrides
the default architectures (sm_80 and sm_90).
"""

import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent.resolve()
sys.path.insert(0, str(ROOT / "scripts"))
import build_env  # noqa: E402  (sets CUDA_HOME before torch.utils.cpp_extension reads it)

build_env.configure()

import torch  # noqa: E402
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
emulation_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "emulation").glob("*.cpp"))
if emulation_sources and os.environ.get("DIVA_SKIP_EMULATION") != "1":
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
    name="diva_ext",
    version="0.1.0",
    description="Fused C++/CUDA operators for deep metric learning, and a DiVA reproduction",
    packages=find_packages(include=["diva_ext", "diva_ext.*"]),
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    # The tested range (README "Supported versions"): torch 2.11.0 on Python 3.12 (CI's GPU-stack
    # rehearsal, the GPU machines' own stack) and 2.14.1 on Python 3.11 (CI's main stack).
    python_requires=">=3.11,<3.13",
    install_requires=["torch>=2.11,<2.16", "torchvision>=0.26,<0.31", "numpy", "tqdm", "matplotlib", "faiss-gpu"],
    entry_points={"console_scripts": ["diva=diva_ext.cli:main"]},
)
