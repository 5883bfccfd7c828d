"""Why trained parameters are held in float32, and that every stage's output keeps the checkpoint's dtype."""
from __future__ import annotations

import torch

from hatch_vlm.models.precision import cast_to_checkpoint_dtype, checkpoint_dtype, upcast_trainable


def test_bf16_adamw_updates_round_away_and_float32_master_weights_keep_them():
    torch.manual_seed(0)
    w = torch.randn(4096) * 0.02
    changed = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        p = torch.nn.Parameter(w.clone().to(dtype))
        opt = torch.optim.AdamW([p], lr=1e-5, weight_decay=0.0)
        p.grad = torch.randn_like(p)
        opt.step()
        changed[name] = (p.detach().float() != w.to(dtype).float()).float().mean().item()
    assert changed["fp32"] > 0.99           # every weight moved
    assert changed["bf16"] < 0.25           # most updates lost to rounding (|update| 1e-5 < half an ulp)


def test_upcast_then_cast_back(tiny_dir):
    from hatch_vlm.models.loading import load_model_and_processor

    model = load_model_and_processor(tiny_dir)[0].to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    n = upcast_trainable(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert n == sum(p.numel() for p in {id(p): p for p in trained}.values())
    assert all(p.dtype == torch.float32 for p in trained)
    assert all(p.dtype == torch.bfloat16 for p in model.model.visual.parameters())
    cast_to_checkpoint_dtype(model)
    assert checkpoint_dtype(model) == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_pasta_on_a_bf16_checkpoint_keeps_llm_and_dtype(tiny_dir, tmp_path):
    """The PaStA stage on a bf16 checkpoint: LLM bit-identical and still bf16, the tower trained, the output
    saved in bf16 (not float32: 2x the disk and every later stage's memory)."""
    from hatch_vlm.models.loading import load_model_and_processor
    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.stage import run_pasta_stage

    model, processor = load_model_and_processor(tiny_dir, dtype=torch.bfloat16)
    src = tmp_path / "bf16"
    model.save_pretrained(src)
    processor.save_pretrained(src)
    metrics = run_pasta_stage(PastaConfig(model_dir=str(src), output_dir=str(tmp_path / "out"), num_train=8,
                                          num_eval=2, max_steps=2, per_device_train_batch_size=4, plot=False,
                                          check_llm_unchanged=True, warmup_steps=0, bf16=False))
    assert metrics["llm_unchanged"] is True
    out, _ = load_model_and_processor(metrics["checkpoint"])
    assert {p.dtype for p in out.parameters()} == {torch.bfloat16}
    before = dict(model.named_parameters())
    moved = [n for n, p in out.named_parameters() if "visual" in n and not torch.equal(p, before[n])]
    assert moved, "the vision tower did not train"


def test_pasta_bf16_setting_reaches_the_vision_tower(tiny_dir, tmp_path):
    """`bf16: true` puts the PaStA loss under autocast. accelerate's autocast wraps model.forward, which the
    PaStA loss never calls (it runs the tower directly): before the fix the setting was silently a no-op."""
    from hatch_vlm.models.adapters import adapter_for_model
    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.stage import run_pasta_stage
    from hatch_vlm.utils.probes import trainer_probe

    seen = []

    def probe(trainer):
        tower = adapter_for_model(trainer.model).core(trainer.model).visual
        # training forwards only (the held-out evaluation after training runs in float32)
        tower.register_forward_pre_hook(
            lambda mod, _args: seen.append(torch.is_autocast_enabled("cpu")) if mod.training else None)

    with trainer_probe(probe):
        run_pasta_stage(PastaConfig(model_dir=str(tiny_dir), output_dir=str(tmp_path / "out"), num_train=8,
                                    num_eval=2, max_steps=2, per_device_train_batch_size=4, plot=False,
                                    evaluate_before=False, warmup_steps=0, bf16=True))
    assert seen and all(seen), seen
