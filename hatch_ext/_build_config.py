"""Build-time choices of hatch_ext, as pure functions (no torch, no CUDA): setup.py loads this file by
path (the package itself cannot be imported before the library is built), .ci/check_cuda_compiles.sh
runs it as a script for its nvcc flags, and tests/ops/test_build_and_dispatch.py tests it.

    python hatch_ext/_build_config.py --gencode   # nvcc -gencode flags of the arch list in effect
    python hatch_ext/_build_config.py --archs     # the arch list in effect
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

# SASS for A100 (8.0), H100/H200 (9.0), B200/GB200 (10.0) and RTX 50xx / RTX PRO 6000 Blackwell (12.0),
# plus compute_120 PTX that the driver JIT-compiles on any later GPU. PTX only runs on GPUs of its
# compute capability or newer: a T4 (7.5) or a V100 (7.0) is not covered; set TORCH_CUDA_ARCH_LIST to
# build for them (e.g. "7.5;8.0;9.0+PTX").
DEFAULT_CUDA_ARCHS = "8.0;9.0;10.0;12.0+PTX"

REBUILD_HINT = ("rebuild with a CUDA toolkit: pip install --no-build-isolation -e . "
                "(nvcc on PATH, CUDA_HOME set)")


def cuda_arch_list(env: Mapping[str, str] | None = None) -> str:
    """The TORCH_CUDA_ARCH_LIST to build for: the user's, when set (and not blank), else
    DEFAULT_CUDA_ARCHS. We never leave it unset: torch would then detect the GPUs of the build machine
    only (or fall back to its own list when there are none), so a wheel built on one GPU fails with
    "no kernel image" on another."""
    env = os.environ if env is None else env
    user = env.get("TORCH_CUDA_ARCH_LIST", "").strip()
    return user if user else DEFAULT_CUDA_ARCHS


def gencode_flags(arch_list: str) -> list[str]:
    """nvcc flags for an arch list in TORCH_CUDA_ARCH_LIST syntax ("8.0;9.0+PTX", spaces also
    separate), as torch.utils.cpp_extension builds them: SASS for every entry, plus PTX for the entries
    marked +PTX. Names (e.g. "Hopper") are torch's and not handled here."""
    flags = []
    for entry in arch_list.replace(" ", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        ptx = entry.endswith("+PTX")
        arch = entry[:-4] if ptx else entry
        major, _, minor = arch.partition(".")
        if not major.isdigit() or not (minor.rstrip("af").isdigit() if minor else False):
            raise ValueError(f"hatch: unrecognised CUDA arch {entry!r} in {arch_list!r} "
                             f"(expected e.g. 8.0, 9.0a or 12.0+PTX)")
        num = major + minor
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def find_nvcc(env: Mapping[str, str] | None = None, which=shutil.which) -> str | None:
    """nvcc from CUDA_HOME / CUDA_PATH, else from PATH, else None."""
    env = os.environ if env is None else env
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home:
            path = os.path.join(home, "bin", "nvcc")
            if os.path.isfile(path):
                return path
    return which("nvcc")


def cuda_decision(torch_cuda: str | None, nvcc: str | None, env: Mapping[str, str] | None = None):
    """(build the CUDA kernels?, why not / a warning or None).

    torch_cuda is torch.version.cuda (None for a CPU-only torch); nvcc the compiler found (or None).
    HATCH_NO_CUDA=1 never builds them; HATCH_FORCE_CUDA=1 always does (the build then needs nvcc)."""
    env = os.environ if env is None else env

    def flag(name):
        return env.get(name, "0").lower() in ("1", "true", "yes", "on")

    if flag("HATCH_NO_CUDA"):
        return False, "HATCH_NO_CUDA=1 was set at build time"
    if flag("HATCH_FORCE_CUDA"):
        return True, None
    if torch_cuda is None:
        return False, "torch is a CPU-only build"
    if nvcc is None:
        return False, (f"torch is a CUDA {torch_cuda} build but no nvcc was found at build time "
                       f"(neither $CUDA_HOME/bin/nvcc nor nvcc on PATH)")
    return True, None


def no_nvcc_warning(reason: str) -> str:
    """The banner setup.py prints when torch is a CUDA build but the kernels are not built."""
    return ("\n" + "=" * 100 + "\nhatch: WARNING: building hatch_ext WITHOUT its CUDA kernels: "
            f"{reason}.\nCUDA tensors will then fail with 'hatch_ext was built without CUDA kernels'; "
            f"{REBUILD_HINT}.\n" + "=" * 100 + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--gencode"]:
        print(" ".join(gencode_flags(cuda_arch_list())))
    elif sys.argv[1:] == ["--archs"]:
        print(cuda_arch_list())
    else:
        sys.exit("usage: python hatch_ext/_build_config.py --gencode | --archs")
