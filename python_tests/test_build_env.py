"""scripts/build_env.py: TORCH_CUDA_ARCH_LIST as CMake's CUDA architectures (scripts/cmake_test.sh)."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import build_env  # noqa: E402


@pytest.mark.parametrize("arch_list, expected", [
    ("9.0", "90-real"),
    ("8.0;9.0", "80-real;90-real"),
    (" 8.6 9.0a ", "86-real;90a-real"),  # spaces separate too, as in torch
    ("8.0;9.0+PTX", "80-real;90"),  # +PTX: machine code and PTX, CMake's plain "90"
    ("10.0f;12.0", "100f-real;120-real"),
])
def test_torch_arch_list_as_cmake_architectures(arch_list, expected):
    assert build_env.cmake_cuda_architectures(arch_list) == expected


@pytest.mark.parametrize("arch_list, named", [("Hopper", "'Hopper'"), ("9", "'9'"), ("9.0;sm_80", "'sm_80'"),
                                              ("9.0+ptx", "'9.0+ptx'")])
def test_an_entry_that_is_no_architecture_is_named(arch_list, named):
    with pytest.raises(ValueError, match=re.escape(f"TORCH_CUDA_ARCH_LIST: {named} is not an architecture")):
        build_env.cmake_cuda_architectures(arch_list)


@pytest.mark.parametrize("arch_list", ["", " ", ";;"])
def test_an_empty_list_is_refused(arch_list):
    with pytest.raises(ValueError, match="names no architecture"):
        build_env.cmake_cuda_architectures(arch_list)
