"""hatch_vlm.models.saving decides when a trained model's parameters are sharded and must be gathered before
rank 0 saves. (FSDP itself needs GPUs: on CPU, transformers' Trainer runs the FSDP launch config as plain
multi-CPU DDP, so the gather is exercised here through a stand-in accelerator.)"""
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from hatch_vlm.models.saving import gather_full_state, is_sharded


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


@pytest.mark.parametrize("env, engine", [
    ({}, None), ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "DeepSpeed ZeRO-3")])
def test_pipeline_refuses_lora_under_sharding_before_training(monkeypatch, tmp_path, env, engine):
    """A LoRA stage under FSDP / ZeRO-3 fails at start (not after hours of training, at the save)."""
    from hatch_vlm.pipeline.config import HatchConfig
    from hatch_vlm.pipeline.runner import run_pipeline
    from hatch_vlm.utils.config import ConfigError

    for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = HatchConfig(output_dir=str(tmp_path / "run"), stages=["grpo"], grpo={"lora": {"r": 4}})
    if engine is None:
        from hatch_vlm.pipeline import runner

        monkeypatch.setattr(runner, "_prepare", lambda run: (_ for _ in ()).throw(RuntimeError("got past")))
        with pytest.raises(RuntimeError, match="got past"):
            run_pipeline(cfg)
    else:
        with pytest.raises(ConfigError, match=f"grpo: LoRA cannot be merged and saved under {engine}"):
            run_pipeline(cfg)
        assert not (tmp_path / "run").exists()                # refused before writing anything
