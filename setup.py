"""Builds hatch: the `hatch_ext._C` library of torch ops (C++ always, CUDA when available).

    pip install --no-build-isolation -e .

Switches: HATCH_FORCE_CUDA=1 builds the CUDA kernels even when no CUDA build of torch is detected;
HATCH_NO_CUDA=1 never builds them. TORCH_CUDA_ARCH_LIST, when set, is used as it is; otherwise the
kernels are built for "8.0;9.0;10.0;12.0+PTX" (A100, H100/H200, B200, RTX 50xx / RTX PRO Blackwell, and
PTX for later GPUs); see hatch_ext/_build_config.py. A CUDA build of torch without nvcc builds the CPU
kernels only, with a warning; CUDA tensors then get a clear error naming the op.
"""
import glob
import importlib.util
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


def _load_build_config():
    """hatch_ext/_build_config.py by path: importing the hatch_ext package would load the library."""
    spec = importlib.util.spec_from_file_location(
        "hatch_ext_build_config", os.path.join(ROOT, "hatch_ext", "_build_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_config = _load_build_config()


def use_cuda() -> tuple[bool, str | None]:
    """(build the CUDA kernels?, why not). Warns when torch is a CUDA build but nvcc is missing."""
    env = dict(os.environ)
    if cpp_extension.CUDA_HOME and not env.get("CUDA_HOME"):
        env["CUDA_HOME"] = cpp_extension.CUDA_HOME  # torch's own search (PATH, /usr/local/cuda)
    cuda, reason = build_config.cuda_decision(torch.version.cuda, build_config.find_nvcc(env), env)
    if not cuda and torch.version.cuda is not None:
        print(build_config.no_nvcc_warning(reason), file=sys.stderr, flush=True)
    return cuda, reason


def sources(cuda: bool) -> list[str]:
    src = ["csrc/ops.cpp", "csrc/python_module.cpp"]
    src += sorted(glob.glob("csrc/common/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    if cuda:
        src += sorted(glob.glob("csrc/cuda/*.cu"))
    return src


def write_build_info(cuda: bool, archs: str | None, no_cuda_reason: str | None) -> None:
    """Records what the library is built against; hatch_ext refuses to load under another torch."""
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cuda_archs": archs if cuda else None,
        "with_cuda": cuda,
        "no_cuda_reason": None if cuda else no_cuda_reason,
        "python": sys.version.split()[0],
    }
    with open(os.path.join(ROOT, "hatch_ext", "_build_info.json"), "w") as f:
        json.dump(info, f, indent=2)


def extension():
    cuda, no_cuda_reason = use_cuda()
    archs = None
    if cuda:
        # Set, never left to torch: unset, it builds for the build machine's GPUs only.
        archs = build_config.cuda_arch_list()
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    write_build_info(cuda, archs, no_cuda_reason)
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
        # headers too (csrc/cuda/device/*.cuh hold the kernels' bodies): an edit there rebuilds
        depends=sorted(glob.glob("csrc/**/*.h", recursive=True) + glob.glob("csrc/**/*.cuh", recursive=True)),
        extra_compile_args=extra_compile_args,
        extra_link_args=openmp,
        define_macros=define_macros,
    )


class BuildExt(cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)):
    """torch's BuildExtension (ninja), with an editable install's objects kept where a wheel build keeps them.

    setuptools builds an editable install (`pip install -e .`) in a throwaway directory, so the next build of
    the same sources (`pip wheel .`, as the install tests and users' packaging do) compiled every file again
    (~90 s here). In build/temp.<platform>-<python> instead, ninja rebuilds only what changed: it tracks each
    object's command line and headers, so a changed flag or file still rebuilds."""

    def finalize_options(self):
        super().finalize_options()
        if getattr(self, "editable_mode", False):
            import sysconfig

            self.build_temp = os.path.join(ROOT, "build",
                                           f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}")


setup(
    # hatch_ext (the ops) sits at the root beside csrc/; the training framework lives in python/hatch_vlm.
    packages=["hatch_ext"] + find_packages("python", include=["hatch_vlm", "hatch_vlm.*"]),
    package_dir={"hatch_ext": "hatch_ext", "hatch_vlm": "python/hatch_vlm"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExt},
)
