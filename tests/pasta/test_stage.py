"""The PaStA stage end to end on the tiny model (shortened), LoRA, and the auxiliary loss."""
import json
import math

import pytest
import torch

from hatch_vlm.models.loading import load_model_and_processor
from hatch_vlm.pasta.metrics import correspondence_metrics
from hatch_vlm.pasta.stage import (PastaCollator, PastaConfig, make_samples, pasta_aux_loss, pasta_loss,
                               run_pasta_stage)


def _split(state):
    """(vision tower, everything else) of a Qwen2.5-VL state dict."""
    vis = {k: v for k, v in state.items() if k.startswith("model.visual.")}
    return vis, {k: v for k, v in state.items() if k not in vis}


@pytest.fixture(scope="module")
def short_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pasta_full")
    config = PastaConfig(model_dir=str(tiny_dir), output_dir=str(out), num_train=48, num_eval=16,
                         image_size=112, max_steps=40, batch_size=4, learning_rate=2e-3, warmup_steps=4,
                         logging_steps=10, save_steps=20, eval_seed=999)
    eval_samples = make_samples(config, config.num_eval, config.eval_seed)
    return config, eval_samples, run_pasta_stage(config, eval_samples=eval_samples)


@pytest.mark.slow
def test_short_stage_improves_correspondence(short_run):
    _, _, res = short_run
    assert res["steps"] == 40 and res["num_eval_rows"] > 100
    assert res["after_top1"] > res["before_top1"] + 0.03, res
    assert res["after_mean_rank"] < res["before_mean_rank"], res
    assert res["before_top1"] > res["chance_top1"] - 0.02          # sanity: chance is 1/16-ish


@pytest.mark.slow
def test_stage_changes_only_the_vision_tower(short_run, tiny_dir):
    _, _, res = short_run
    before, _ = load_model_and_processor(tiny_dir)
    after, _ = load_model_and_processor(res["checkpoint"])
    vis_b, llm_b = _split(before.state_dict())
    vis_a, llm_a = _split(after.state_dict())
    assert llm_b.keys() == llm_a.keys() and len(llm_b) > 10 and len(vis_b) > 10
    assert all(torch.equal(llm_b[k], llm_a[k]) for k in llm_b)       # LLM bit-identical
    assert sum(not torch.equal(vis_b[k], vis_a[k]) for k in vis_b) > len(vis_b) // 2
    assert res["llm_unchanged"] is True


@pytest.mark.slow
def test_checkpoint_reload_gives_same_metric(short_run):
    config, eval_samples, res = short_run
    model, processor = load_model_and_processor(res["checkpoint"])
    m = correspondence_metrics(model, processor, eval_samples, config.grid)
    assert m["top1"] == res["after_top1"] and m["mean_rank"] == res["after_mean_rank"]
    out = config.output_dir
    saved = json.loads(open(f"{out}/metrics.json").read())
    assert saved["after_top1"] == res["after_top1"]
    import os

    assert os.path.isfile(f"{out}/checkpoint-20/model.safetensors")  # Trainer checkpoint, safetensors
    assert os.path.getsize(f"{out}/matches.png") > 10_000
    logs = json.loads(open(f"{out}/log_history.json").read())
    assert any("loss" in e and "valid_rows" in e for e in logs)


@pytest.mark.slow
def test_lora_stage_trains_vision_only(tiny_dir, tmp_path):
    config = PastaConfig(model_dir=str(tiny_dir), output_dir=str(tmp_path), tune="lora", num_train=8,
                         num_eval=4, max_steps=3, batch_size=2, grad_accum=2, evaluate_before=False, plot=False,
                         logging_steps=1, lora_r=4)
    res = run_pasta_stage(config)
    assert res["llm_unchanged"] is True and res["steps"] == 3
    before, _ = load_model_and_processor(tiny_dir)
    after, _ = load_model_and_processor(res["checkpoint"])    # merged: a plain model directory
    sb, sa = before.state_dict(), after.state_dict()
    assert sb.keys() == sa.keys()
    changed = [k for k in sb if not torch.equal(sb[k], sa[k])]
    assert changed and all(k.startswith("model.visual.") for k in changed)


def test_aux_loss(tiny):
    model, processor = tiny
    config = PastaConfig(model_dir="", output_dir="")
    batch = PastaCollator(processor)(make_samples(config, 2, seed=5))
    # The stage's loss is the compiled op, equal to the naive reference on the model's cell embeddings.
    import hatch_ext
    from hatch_vlm.pasta import loss as loss_module
    from hatch_vlm.pasta.cells import cell_embeddings_from_pixels

    assert loss_module.patch_align is hatch_ext.ops.patch_align
    with torch.no_grad():
        emb = cell_embeddings_from_pixels(model, batch["pixel_values"], batch["image_grid_thw"], 2, 4)
        # float64 reference: a float32 naive reprojection flips a few boundary pixels.
        ref = hatch_ext.reference.patch_align(emb.double(), batch["depth"].double(), batch["K"],
                                              batch["cam_to_world"], 4)
        torch.testing.assert_close(pasta_loss(model, batch).double(), ref, rtol=1e-5, atol=1e-6)
    zero = pasta_aux_loss(model, batch, 0.0)
    assert zero.item() == 0 and not zero.requires_grad
    model.zero_grad()
    aux = pasta_aux_loss(model, batch, 0.5)
    torch.testing.assert_close(aux, 0.5 * pasta_loss(model, batch))
    aux.backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert with_grad and all(".visual." in n for n in with_grad)
    model.zero_grad()
    with pytest.raises(KeyError, match="depth"):
        pasta_aux_loss(model, {k: v for k, v in batch.items() if k != "depth"}, 1.0)
    with pytest.raises(ValueError, match="weight"):
        pasta_aux_loss(model, batch, -1.0)


def test_config_errors(tiny_dir, tmp_path):
    for bad in ({"tune": "half"}, {"views": 1}, {"data": "imagenet"}, {"learning_rate": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            run_pasta_stage(PastaConfig(model_dir=str(tiny_dir), output_dir=str(tmp_path), **bad))


def test_time_aware_cosine():
    from hatch_vlm.pasta.stage import time_aware_cosine

    def factors(max_seconds, n=6):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = time_aware_cosine(opt, warmup_steps=2, max_steps=6, max_seconds=max_seconds)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    slow = factors(1e9)                         # the step count runs out first: plain warm-up + cosine
    want = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(slow, want)), slow
    fast = factors(1e-9)                        # the clock runs out first: decayed right after warm-up
    assert fast[:2] == pytest.approx([1 / 3, 2 / 3]) and max(fast[2:]) < 1e-6


def test_embeddings_through_a_wrapper_keep_an_installed_forward(tiny):
    """Through a wrapper (DDP in real runs; DataParallel on CPU here) the cell embeddings go through the
    wrapper's call, and an instance `forward` someone installed (TRL's GRPOTrainer does) survives."""
    from hatch_vlm.pasta.cells import cell_embeddings_from_pixels
    from hatch_vlm.pasta.stage import _cell_embeddings

    model, processor = tiny
    batch = PastaCollator(processor)(make_samples(PastaConfig(model_dir="", output_dir=""), 1, seed=3))
    args = (batch["pixel_values"], batch["image_grid_thw"], 2, 4)
    with torch.no_grad():
        direct = cell_embeddings_from_pixels(model, *args, 4)
        installed = lambda *a, **k: "installed"                      # noqa: E731
        model.forward = installed
        try:
            torch.testing.assert_close(_cell_embeddings(torch.nn.DataParallel(model), *args), direct)
            assert model.__dict__.get("forward") is installed
        finally:
            del model.forward
        torch.testing.assert_close(_cell_embeddings(torch.nn.DataParallel(model), *args), direct)
        assert "forward" not in model.__dict__
