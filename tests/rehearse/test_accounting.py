"""Model-state accounting is exact: the prediction equals the bytes of the live tensors after an optimizer
step (weights, gradients, every optimizer state), for the ways our stages train; engines shard as stated;
our numbers equal accelerate's estimator where the two overlap."""
from __future__ import annotations

import pytest
import torch

from hatch_vlm.rehearse.accounting import ModelState, measured_state, model_state, per_gpu


def _step(model):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = sum((p.float() ** 2).sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    opt.step()
    return opt


def _bytes(state: dict) -> int:
    return state["weights"] + state["grads"] + state["optimizer"]


@pytest.fixture()
def tiny(tiny_dir):
    from hatch_vlm.models.loading import load_model_and_processor

    return load_model_and_processor(tiny_dir)[0]


def test_full_training_state_is_exact(tiny):
    tiny.train()
    predicted = model_state(tiny)
    live = measured_state(tiny, _step(tiny))
    assert (predicted.weights, predicted.grads, predicted.optimizer) == (live["weights"], live["grads"],
                                                                         live["optimizer"])
    n = sum(p.numel() for p in {id(p): p for p in tiny.parameters()}.values())
    assert predicted.weights == 4 * n and predicted.optimizer == 8 * n + 4 * predicted.trainable_tensors


def test_pasta_state_on_a_bf16_checkpoint_is_exact(tiny):
    """PaStA on a bf16 model: the frozen LLM stays bf16 (2 B), the trained tower is float32 master weights."""
    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.trainer import freeze_for_pasta

    model = freeze_for_pasta(tiny.to(torch.bfloat16), PastaConfig(model_dir="", output_dir=""))
    predicted = model_state(model)
    assert predicted.frozen_bytes == 2 * predicted.frozen and predicted.trainable_bytes == 4 * predicted.trainable
    live = measured_state(model, _step(model))
    assert _bytes(live) == predicted.total


def test_lora_state_is_exact(tiny):
    from peft import get_peft_model

    from hatch_vlm.actor.sft import make_lora_config

    model = get_peft_model(tiny.to(torch.bfloat16), make_lora_config({"r": 4}, tiny))
    predicted = model_state(model)
    assert 0 < predicted.trainable < predicted.frozen
    assert _bytes(measured_state(model, _step(model))) == predicted.total


def test_engines_shard_as_documented():
    s = ModelState(weights=4 * 100 + 2 * 50, grads=400, optimizer=800, trainable=100, frozen=50,
                   trainable_bytes=400, frozen_bytes=100, trainable_tensors=0)
    assert vars(per_gpu(s, "ddp", 1)) == {"engine": "ddp", "gpus": 1, "weights": 500, "grads": 400,
                                          "optimizer": 800}
    assert per_gpu(s, "ddp", 4).grads == 800                    # DDP's buckets: a second gradient copy
    z2 = per_gpu(s, "zero2", 4)
    assert (z2.weights, z2.grads, z2.optimizer) == (2 * 100 + 100, 2 * 100 / 4, 12 * 100 / 4)
    z3 = per_gpu(s, "zero3", 4, largest_layer=10)
    assert (z3.weights, z3.grads, z3.optimizer) == ((200 + 100) / 4 + 10, 50, 300)
    f = per_gpu(s, "fsdp", 4, largest_layer=10)
    assert (f.weights, f.grads, f.optimizer) == ((400 + 100) / 4 + 10, 100, 200)
    with pytest.raises(ValueError, match="engine must be one of ddp, zero2, zero3, fsdp, got 'zero4'"):
        per_gpu(s, "zero4", 4)


def test_agrees_with_accelerate_estimator(tiny):
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes

    model = tiny.float()
    total, _ = calculate_maximum_sizes(model)
    ours = model_state(model)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert ours.weights + buffers == total                       # accelerate counts buffers as well
    usage = estimate_training_usage(ours.weights, "float32")
    # float32 Adam: weights + grads + two moments = accelerate's peak ("step"); ours adds AdamW's step scalars
    assert ours.total - 4 * ours.trainable_tensors == max(usage.values())
