"""`freeze:` in full fine-tuning (models/freezing.py): the frozen parts do not move and hold no training state,
the rest still trains (through gradient checkpointing too), and the rehearsal's meta-device count follows."""
import pytest
import torch

pytest.importorskip("trl")

from hatch_vlm.actor.formatting import cold_start_row  # noqa: E402
from hatch_vlm.actor.sft import SFTOptions, run_sft  # noqa: E402
from hatch_vlm.models.adapters import adapter_for_model  # noqa: E402
from hatch_vlm.models.freezing import freeze_parts, parameters_of  # noqa: E402
from hatch_vlm.models.loading import load_model_and_processor  # noqa: E402

from tests.actor._samples import random_samples  # noqa: E402


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("parts", [["embeddings"], ["vision", "embeddings"]])
def test_frozen_parts_stay_and_the_rest_trains(tiny_dir, tmp_path, parts):
    torch.manual_seed(0)
    model, proc = load_model_and_processor(tiny_dir)
    frozen = {id(p) for part in parts for p in parameters_of(model, part)}
    vision = {id(p) for p in adapter_for_model(model).vision_parameters(model)}
    names = {id(p): n for n, p in model.named_parameters()}
    before = _snapshot(model)
    rows = [cold_start_row(s) for s in random_samples(4, seed=0, views=(2,))]
    opts = SFTOptions(freeze=parts, trl={"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                         "warmup_steps": 0})
    trainer = run_sft(model, proc, rows, tmp_path, opts)
    assert trainer.args.activation_checkpointing is True      # the re-entrant case: inputs must carry a gradient
    moved = {id(p) for n, p in model.named_parameters() if not torch.equal(before[n], p.detach().to(before[n].dtype))}
    assert not moved & frozen, [names[i] for i in moved & frozen]
    for i in frozen:
        assert not next(p for p in model.parameters() if id(p) == i).requires_grad
    decoder = [i for i, n in names.items() if ".layers." in n and i not in vision]
    assert len(moved & set(decoder)) > 0.9 * len(decoder), "the decoder did not train"
    if "vision" in parts:
        assert not moved & vision
    else:
        assert moved & vision
    # no optimizer state for a frozen parameter
    held = {id(p) for p in trainer.optimizer.state}
    assert not held & frozen and held


def test_meta_count_leaves_frozen_parts_out(tiny_dir):
    """The rehearsal prepares a meta-device model with the stage's own code: frozen parts are counted as
    weights only (no float32 copy, gradient or moments)."""
    from hatch_vlm.rehearse.accounting import model_state

    model, _ = load_model_and_processor(tiny_dir)
    full = model_state(model)
    emb = {id(p): p for p in parameters_of(model, "embeddings")}
    n = freeze_parts(model, ["embeddings"])
    assert n == sum(p.numel() for p in emb.values()) > 0
    part = model_state(model)
    assert full.weights == part.weights
    assert full.grads - part.grads == sum(p.numel() * p.element_size() for p in emb.values())
