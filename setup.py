"""Builds hatch: the `hatch_ext._C` library of torch ops (C++ always, CUDA when available).

    pip install --no-build-isolation -e .

Switches: HATCH_FORCE_CUDA=1 builds the CUDA kernels even when no CUDA build of torch is detected;
HATCH_NO_CUDA=1 never builds them. TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0" (A100, H100/H200).
"""
import glob
import json
import os
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # one line, not a traceback: the most common first-time mistake
    sys.exit(
        "hatch: PyTorch is required to build the ops but is not installed in this environment. "
        "Install it first (`pip install torch==2.13.0`), then `pip install --no-build-isolation -e .`."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def use_cuda() -> bool:
    if _flag("HATCH_NO_CUDA"):
        return False
    if _flag("HATCH_FORCE_CUDA"):
        return True
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def sources(cuda: bool) -> list[str]:
    src = ["csrc/ops.cpp", "csrc/python_module.cpp"]
    src += sorted(glob.glob("csrc/common/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    if cuda:
        src += sorted(glob.glob("csrc/cuda/*.cu"))
    return src


def write_build_info(cuda: bool) -> None:
    """Records what the library is built against; hatch_ext refuses to load under another torch."""
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cuda_archs": os.environ.get("TORCH_CUDA_ARCH_LIST") if cuda else None,
        "with_cuda": cuda,
        "python": sys.version.split()[0],
    }
    with open(os.path.join(ROOT, "hatch_ext", "_build_info.json"), "w") as f:
        json.dump(info, f, indent=2)


def extension():
    cuda = use_cuda()
    if cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    write_build_info(cuda)
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]  # at::parallel_for is OpenMP-backed
    extra_compile_args = {"cxx": ["-O3", *openmp]}
    define_macros = []
    if cuda:
        extra_compile_args["nvcc"] = ["-O3", "--use_fast_math", "-lineinfo"]
        define_macros.append(("HATCH_WITH_CUDA", None))
    ext_cls = cpp_extension.CUDAExtension if cuda else cpp_extension.CppExtension
    return ext_cls(
        name="hatch_ext._C",
        sources=sources(cuda),
        extra_compile_args=extra_compile_args,
        extra_link_args=openmp,
        define_macros=define_macros,
    )


setup(
    # hatch_ext (the ops) sits at the root beside csrc/; the training framework lives in python/hatch.
    packages=["hatch_ext"] + find_packages("python", include=["hatch", "hatch.*"]),
    package_dir={"hatch_ext": "hatch_ext", "hatch": "python/hatch"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)},
)
