"""hatch.models.saving decides when a trained model's parameters are sharded and must be gathered before
rank 0 saves. (FSDP itself needs GPUs: on CPU, transformers' Trainer runs the FSDP launch config as plain
multi-CPU DDP, so the gather is exercised here through a stand-in accelerator.)"""
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from hatch.models.saving import gather_full_state, is_sharded


class FakeAccelerator:
    def __init__(self, kind, zero_stage=None):
        self.distributed_type = kind
        self.state = SimpleNamespace(deepspeed_plugin=None if zero_stage is None
                                     else SimpleNamespace(zero_stage=zero_stage))
        self.gathered = []

    def unwrap_model(self, model):
        return model

    def get_state_dict(self, model):
        self.gathered.append(model)
        return {"w": torch.ones(2)}


@pytest.mark.parametrize("kind, stage, sharded", [
    (DistributedType.NO, None, False), (DistributedType.MULTI_GPU, None, False),
    (DistributedType.MULTI_CPU, None, False), (DistributedType.FSDP, None, True),
    (DistributedType.DEEPSPEED, 2, False), (DistributedType.DEEPSPEED, 3, True)])
def test_is_sharded(kind, stage, sharded):
    assert is_sharded(FakeAccelerator(kind, stage)) is sharded


def test_gather_only_when_sharded():
    model, wrapped = torch.nn.Linear(2, 2), object()
    ddp = FakeAccelerator(DistributedType.MULTI_GPU)
    assert gather_full_state(SimpleNamespace(accelerator=ddp, model=model, model_wrapped=wrapped)) is None
    assert ddp.gathered == []
    fsdp = FakeAccelerator(DistributedType.FSDP)
    state = gather_full_state(SimpleNamespace(accelerator=fsdp, model=model, model_wrapped=wrapped))
    assert fsdp.gathered == [wrapped] and set(state) == {"w"}     # gathered from the wrapped (sharded) model


def test_lora_under_sharding_is_refused():
    lora = torch.nn.Linear(2, 2)
    lora.merge_and_unload = lambda: lora
    acc = FakeAccelerator(DistributedType.DEEPSPEED, 3)
    with pytest.raises(NotImplementedError, match="LoRA.*DEEPSPEED|DEEPSPEED.*LoRA|use DDP or DeepSpeed ZeRO-2"):
        gather_full_state(SimpleNamespace(accelerator=acc, model=lora, model_wrapped=lora))
    assert acc.gathered == []
