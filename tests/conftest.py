import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist (`pytest -n auto`, what CI runs) the cores are shared out between the workers: each gets
# its share of threads, and so do the processes its tests start (OMP_NUM_THREADS), instead of every worker
# running a core's worth of threads on every core.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
    torch.set_num_threads(_THREADS)

# Tests sharing an expensive session fixture run in one xdist worker (`--dist loadgroup`), so it is built
# once: the emulated-CUDA harness and its sanitizer builds, and the wheel the install tests install. The
# multi-process tests (tests/scale/: 2 ranks each, meeting at every collective) run one at a time in one
# worker: two at once put 4 ranks on CI's 2 cores, and a 2-rank ZeRO-2 test that takes 9 s alone took 83-105 s.
XDIST_GROUPS = {"tests/emulation/": "emulation", "tests/install/": "install", "tests/scale/": "scale"}


@pytest.hookimpl(tryfirst=True)      # before xdist's own hook turns the marker into the scheduling group
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.replace("\\", "/")
        for prefix, group in XDIST_GROUPS.items():
            if path.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))


def cuda_ready() -> bool:
    import hatch_ext

    return torch.cuda.is_available() and hatch_ext.has_cuda_kernels()


requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU on this machine (CI has none); run on a GPU host")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny Qwen2.5-VL (seed 0), built once per test session; tests only read it."""
    from hatch_vlm.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)
