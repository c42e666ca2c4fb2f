"""Build environment shared by setup.py and CMake configuration: where CUDA is, which sources.

The `nvcc` on PATH may be a wrapper script, and then torch's CUDA_HOME guess (the folder above
`which nvcc`) is wrong; so the real toolkit is looked for first. The cuBLAS/cuSPARSE headers that
torch's CUDA headers include ship in the nvidia-*-cu13 wheels, not in the toolkit.
"""

import os
import re
import shutil
from pathlib import Path

DEFAULT_ARCHS = "8.0;9.0"

# The C++ standard of every compilation (host compiler and nvcc; CMakeLists.txt sets the same).
# The sources need C++20 (std::bit_cast, std::source_location). torch's extension builder only
# adds its own default (-std=c++17 up to torch 2.11, -std=c++20 from 2.12 on) when no -std= flag
# is given, so naming ours in extra_compile_args makes it the only one on every compile line.
CXX_STD_FLAG = "-std=c++20"

# Flags of the test-only CUDA emulation extension (csrc/emulation/): the kernels compiled for the
# CPU (DIVA_CUDA_EMULATION selects csrc/emulation/ in device.h).
# -fsanitize=bounds checks indexing of fixed-size arrays (static __shared__ tiles, local arrays);
# the emulation's own handler turns a hit into a kernel error, so libubsan is not linked.
# -O1 -g0: the kernels run on small sizes, and a quicker build matters more.
EMULATION_CXX_FLAGS = [CXX_STD_FLAG, "-O1", "-g0", "-fsanitize=bounds", "-DDIVA_CUDA_EMULATION", "-DDIVA_PYTHON_MODULE"]


def _real_cuda_home():
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates = [Path("/usr/local/cuda")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
    for c in candidates:
        if (c / "bin" / "nvcc").is_file() and (c / "include" / "cuda_runtime.h").is_file():
            return str(c.resolve())
    return None


def configure():
    """Set CUDA_HOME and the arch list; must run before torch.utils.cpp_extension is imported."""
    if os.environ.get("DIVA_FORCE_CPU") == "1":
        return
    home = _real_cuda_home()
    if home:
        os.environ["CUDA_HOME"] = home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)


def cuda_enabled():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("DIVA_FORCE_CPU") == "1":
        return False
    return torch.version.cuda is not None and CUDA_HOME is not None


def nvidia_wheel_dir():
    """site-packages/nvidia/cu13 (or cuXX) of the installed torch, if present."""
    import torch

    base = Path(torch.__file__).resolve().parent.parent / "nvidia"
    major = (torch.version.cuda or "").split(".")[0]
    for d in [base / f"cu{major}", base]:
        if (d / "include").is_dir():
            return d
    return None


def cuda_extra_include_dirs():
    d = nvidia_wheel_dir()
    return [str(d / "include")] if d else []


def sources(root):
    """The one source list (csrc/sources.txt), split into C++ and CUDA files."""
    root = Path(root)
    files = [
        root / line.strip()
        for line in (root / "csrc" / "sources.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return {
        "cpp": [f for f in files if f.suffix == ".cpp"],
        "cu": [f for f in files if f.suffix == ".cu"],
    }


def cmake_cuda_architectures(arch_list):
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0", "9.0a", "8.6+PTX"; ";" or spaces between) as
    CMAKE_CUDA_ARCHITECTURES: "X.Y" is machine code only ("XY-real"), "+PTX" adds the PTX ("XY")."""
    archs = []
    for item in re.split(r"[;\s]+", arch_list.strip()):
        if not item:
            continue
        m = re.fullmatch(r"(\d+)\.(\d)([af]?)(\+PTX)?", item)
        if not m:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: {item!r} is not an architecture such as 9.0, 9.0a or 8.6+PTX "
                             f"(got {arch_list!r})")
        name = m[1] + m[2] + m[3]
        archs.append(name if m[4] else f"{name}-real")
    if not archs:
        raise ValueError("TORCH_CUDA_ARCH_LIST is set but names no architecture")
    return ";".join(archs)


def cmake_env():
    """Shell assignments for scripts/cmake_test.sh."""
    import shlex

    configure()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    import ninja

    values = {
        "TORCH_CMAKE_PREFIX": torch.utils.cmake_prefix_path,
        "NINJA": str(Path(ninja.BIN_DIR) / "ninja"),
        "CUDA_HOME": CUDA_HOME if cuda_enabled() else "",
        "NVIDIA_INCLUDE": "",
        "NVIDIA_LIB": "",
        "NVRTC_LIB": "",
        "CUDA_ARCHS_TORCH": "",
        "CUDA_ARCHS_CMAKE": "",
    }
    if cuda_enabled():
        values["CUDA_ARCHS_TORCH"] = os.environ["TORCH_CUDA_ARCH_LIST"]
        values["CUDA_ARCHS_CMAKE"] = cmake_cuda_architectures(values["CUDA_ARCHS_TORCH"])
    wheel = nvidia_wheel_dir()
    if wheel:
        values["NVIDIA_INCLUDE"] = str(wheel / "include")
        values["NVIDIA_LIB"] = str(wheel / "lib")
        nvrtc = sorted((wheel / "lib").glob("libnvrtc.so*"))
        values["NVRTC_LIB"] = str(nvrtc[0]) if nvrtc else ""
    return "\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--cmake-env"]:
        try:
            print(cmake_env())
        except ValueError as err:
            sys.exit(f"build_env: {err}")
    else:
        sys.exit("usage: build_env.py --cmake-env")
