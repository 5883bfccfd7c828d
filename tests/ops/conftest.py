"""The `device` fixture of the op tests: every test that takes it runs once per device of
_cases.DEVICES ("cpu"; "cuda", skipped with the reason where there is no GPU or no CUDA build)."""
import pytest
import torch
from _cases import DEVICES


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
