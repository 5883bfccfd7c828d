import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
