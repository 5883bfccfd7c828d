"""`hatch-vlm rehearse` end to end on the tiny config, and its refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hatch_vlm.cli import main
from hatch_vlm.utils.config import ConfigError

MODELS = Path(__file__).resolve().parents[2] / "configs" / "models"


def _config(tmp_path, stages="[pasta, qa_sft, grpo, eval]", model="tiny", extra="") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {model}
stages: {stages}
threads: 1
data: {{kind: synthetic, num_train: 16, num_eval: 4, views: 2, size: 112}}
pasta: {{max_steps: 100, per_device_train_batch_size: 4}}
qa_sft: {{max_steps: 100, per_device_train_batch_size: 4, gradient_accumulation_steps: 2}}
grpo: {{max_steps: 100, per_device_train_batch_size: 4, num_generations: 2, max_completion_length: 8}}
eval: {{synthetic: true, max_new_tokens: 8, batch_size: 2}}
{extra}""")
    return cfg


@pytest.mark.slow
def test_rehearse_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "rh"
    assert main(["rehearse", "--config", str(_config(tmp_path)), "--out", str(out), "--steps", "1",
                 "--warmup", "1", "--name", "tiny", "--budget", "6"]) == 0
    rep = json.loads((out / "rehearsal_tiny.json").read_text())
    assert [s["stage"] for s in rep["stages"]] == ["pasta", "qa_sft", "grpo", "eval"]
    for s in rep["stages"]:
        assert s["peak"]["how"] == "measured" and s["peak"]["value"] > 0
        for check in s["mirror_check"]:
            assert check.get("equal", True), check      # the trainer held exactly the predicted state
    qa = next(s for s in rep["stages"] if s["stage"] == "qa_sft")
    assert qa["micro_batches_per_step"] == 2 and qa["step_seconds"]["how"] == "extrapolated"
    assert qa["visual_tokens"] > 0 and qa["text_tokens"] > 0
    grpo = next(s for s in rep["stages"] if s["stage"] == "grpo")
    assert grpo["generation_tokens_per_s"]["value"] > 0
    pasta = rep["stages"][0]
    assert 0 < pasta["op_share"]["value"] < 1
    md = (out / "rehearsal_tiny.md").read_text()
    assert "## GPU plan: 8 × 80 GiB, ddp" in md and (out / "rehearsal_tiny_plan.png").stat().st_size > 1000
    assert set(rep["plan"]) == {"pasta", "qa_sft", "grpo", "eval"}
    # the workers replaced the CPU-only slow paths, and the report says so (hatch_vlm.rehearse.cpu_costs)
    worker = json.loads(next((out / "work" / "grpo").glob("*/result.json")).read_text())
    assert worker["cpu_costs_replaced"] == ["torch.multinomial", "trl.kernels.chunked_logprob._addmm_fp32"]
    assert any("cpu_costs" in n for n in rep["notes"])
    # the same rehearsal again into the same OUT reuses the measured variant, and the report says so (its
    # whole time is then not what measuring took)
    assert main(["rehearse", "--config", str(_config(tmp_path)), "--out", str(out), "--steps", "1",
                 "--warmup", "1", "--name", "again", "--budget", "6", "--stages", "eval"]) == 0
    again = json.loads((out / "rehearsal_again.json").read_text())
    assert [r["reused"] for r in again["stages"][0]["variants"]] == [True]
    assert "1 of 1 variants measured by an earlier run" in (out / "rehearsal_again.md").read_text()


def test_refusals_name_the_setting(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["rehearse", "--config", str(_config(tmp_path)), "--model", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "rh")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert main(["rehearse", "--config", str(_config(tmp_path)), "--engine", "zero4",
                 "--out", str(tmp_path / "rh")]) == 2
    assert "--engine: must be one of ddp, zero2, zero3, fsdp, got 'zero4'" in capsys.readouterr().err


def test_refuses_a_model_that_cannot_fit_even_at_two_layers(tmp_path):
    """Full fine-tuning of the real 3B at 2 layers holds ~9 GiB of model state: with a 3 GiB budget nothing is
    run (every variant is predicted over the budget first) and the stage stops with the numbers."""
    from hatch_vlm.rehearse.runner import Rehearsal, RehearseOptions

    opts = RehearseOptions(config=str(_config(tmp_path, stages="[qa_sft]")), model=str(MODELS / "Qwen2.5-VL-3B-Instruct"),
                           out=str(tmp_path / "rh"), budget_gib=3.0)
    with pytest.raises(ConfigError, match=r"qa_sft: does not fit this machine even at 2 decoder layers and "
                                          r"micro-batch 1: model state alone .* GiB > budget 3.0 GiB"):
        Rehearsal(opts, say=lambda _m: None).run()
    assert not (tmp_path / "rh" / "work").exists()            # nothing was run


def test_replan_a_saved_rehearsal(tmp_path, capsys):
    """A report planned again for other hardware from its JSON alone: the per-GPU model state follows the
    engine's arithmetic, the verdict follows the memory, nothing runs."""
    from hatch_vlm.rehearse.plan import GIB

    t = 1_000_000_000
    state = {"weights": 4 * t, "grads": 4 * t, "optimizer": 8 * t, "trainable": t, "frozen": 0,
             "trainable_bytes": 4 * t, "frozen_bytes": 0, "trainable_tensors": 0, "total": 16 * t}
    stage = {"stage": "qa_sft", "state_full": state, "largest_layer": 0, "micro_batch": 4,
             "micro_batches_per_step": 1, "process_baseline": GIB, "gpu_rest": 4 * GIB,
             "rest": {"value": 5 * GIB, "how": "extrapolated"}, "rest_fit_points": [], "lora": False,
             "peak": {"value": 16 * t + 5 * GIB, "how": "extrapolated"}, "step_seconds": {"value": 1.0,
             "how": "extrapolated"}, "variants": [], "skipped": [], "mirror_check": []}
    rep = {"name": "x", "config": "c", "model": "m", "weights": "random", "tokenizer": "stand-in", "depth": [2, 2],
           "budget_bytes": GIB, "steps": 1, "warmup": 1, "notes": [], "rehearsal_seconds": 1.0, "stages": [stage],
           "plan": {}, "plan_setting": {"gpus": 8, "gpu_mem_gib": 80, "engine": "ddp", "headroom_gib": 3},
           "machine": {"cpu": "", "cores": 2, "memory_gib": 24, "gpu": None, "python": "", "torch": "",
                       "transformers": "", "trl": "", "peft": "", "date": ""},
           "accelerate_check": {"accelerate_model_bytes": 0, "ours_weight_bytes": 0, "buffer_bytes": 0,
                                "accelerate_fp32_adam_bytes": 0, "ours_fp32_adam_bytes": 0, "note": ""}}
    path = tmp_path / "rehearsal_x.json"
    path.write_text(json.dumps(rep))
    assert main(["rehearse", "--replan", str(path), "--gpus", "1", "--gpu-mem", "20"]) == 0
    out = json.loads((tmp_path / "rehearsal_x_1x20gib_ddp.json").read_text())
    chosen = out["plan"]["qa_sft"]["chosen"]
    assert chosen["total"] == 16 * t + 4 * GIB + 3 * GIB and not chosen["fits"]      # 21.9 GiB; 1 GPU: no buckets
    assert main(["rehearse", "--replan", str(path), "--gpus", "8", "--gpu-mem", "24", "--engine", "zero3"]) == 0
    z3 = json.loads((tmp_path / "rehearsal_x_8x24gib_zero3.json").read_text())["plan"]["qa_sft"]["chosen"]
    assert z3["weights"] == 2 * t / 8 and z3["optimizer"] == 12 * t / 8 and z3["fits"]
    assert (tmp_path / "rehearsal_x_8x24gib_zero3.md").read_text().count("FITS") >= 1
    assert main(["rehearse", "--replan", str(tmp_path / "nope.json")]) == 2
    assert "--replan: no such report" in capsys.readouterr().err


def test_full_fine_tuning_over_the_budget_is_measured_with_frozen_embeddings(tmp_path):
    """The 3B's full fine-tuning holds 8.1 GiB of model state at 2 layers: under a 7 GiB budget its variants run
    with the embeddings frozen (a proxy with the same activations), and exactly the embedding's training state
    (float32 master copy less the bf16 weight, gradient, two AdamW moments: 14 B per parameter, and AdamW's 4 B
    step scalar of the one tensor, tied to the head) is left out of
    the variants' state; LoRA stages and stages that fit are run as configured."""
    from hatch_vlm.models.freezing import parameters_of
    from hatch_vlm.rehearse.architecture import meta_model
    from hatch_vlm.rehearse.runner import Rehearsal, RehearseOptions, variant_config

    cfg = _config(tmp_path, stages="[qa_sft, grpo]", extra="grpo: {lora: {r: 8}, per_device_train_batch_size: 4, "
                                                            "num_generations: 2, max_completion_length: 8}")
    opts = RehearseOptions(config=str(cfg), model=str(MODELS / "Qwen2.5-VL-3B-Instruct"), out=str(tmp_path / "rh"),
                           budget_gib=7.0)
    r = Rehearsal(opts, say=lambda _m: None)
    assert r.proxy_freeze("qa_sft") == ["embeddings"] and r.proxy_freeze("grpo") is None
    low = r.depths()[0]
    assert r.smallest() == low and r.tied_transient == 4 * 311_164_928          # the 3B ties embedding and head
    emb = sum(p.numel() for p in parameters_of(meta_model(r.hf), "embeddings"))
    assert r.state_at("qa_sft", low).total - r.state_at("qa_sft", low, ["embeddings"]).total == 14 * emb + 4
    assert variant_config(r.raw, "qa_sft", tmp_path, tmp_path, 1, 1, 2, ["embeddings"])["qa_sft"]["freeze"] == [
        "embeddings"]
    assert Rehearsal(RehearseOptions(config=str(cfg), model=opts.model, out=opts.out, budget_gib=19.0),
                     say=lambda _m: None).proxy_freeze("qa_sft") is None
    # a config that freezes parts itself: the report's LoRA alternative drops the freeze (LoRA freezes all)
    from hatch_vlm.rehearse.report import lora_state

    frozen_cfg = tmp_path / "frozen.yaml"
    frozen_cfg.write_text(cfg.read_text().replace("qa_sft: {max_steps: 100,", "qa_sft: {freeze: [embeddings], max_steps: 100,"))
    r2 = Rehearsal(RehearseOptions(config=str(frozen_cfg), model=opts.model, out=opts.out, budget_gib=19.0),
                   say=lambda _m: None)
    assert r2.cfg.qa_sft.freeze == ["embeddings"] and r2.proxy_freeze("qa_sft") is None
    assert 0 < lora_state(r2, "qa_sft").total < r2.state_at("qa_sft", r2.full).total


def test_the_proxy_adds_back_a_tied_embeddings_second_gradient():
    """The 3B ties its embedding to the LM head: full fine-tuning's backward ends by summing a second float32
    gradient of it (4 B x 311,164,928), which a frozen-embedding proxy never holds; InternVL3-8B's are two
    matrices (nothing to add). The summary's rest, peak and GPU rest all carry it, measured or extrapolated."""
    from hatch_vlm.rehearse.architecture import read_config
    from hatch_vlm.rehearse.runner import add_proxy_transient
    from hatch_vlm.rehearse.stages import tied_gradient_transient

    assert tied_gradient_transient(read_config(MODELS / "Qwen2.5-VL-3B-Instruct")) == 4 * 311_164_928
    assert tied_gradient_transient(read_config(MODELS / "InternVL3-8B-hf")) == 0
    s = {"rest": {"value": 10, "extrapolated": 9, "how": "extrapolated"}, "peak": {"value": 100, "how": "x"},
         "gpu_rest": 7}
    add_proxy_transient(s, 5)
    assert s == {"rest": {"value": 15, "extrapolated": 14, "how": "extrapolated"}, "peak": {"value": 105, "how": "x"},
                 "gpu_rest": 12, "proxy_transient": 5}


def test_a_deeper_variant_that_never_fits_gets_a_depth_between(tmp_path, monkeypatch):
    """When the second depth (4 layers) is over the budget at every micro-batch, a depth between (3 layers) is
    measured instead, so the stage still has a slope over depth; a smaller micro-batch is predicted from the
    points no larger than it (not floored at the config's micro-batch's measurement)."""
    from hatch_vlm.rehearse.runner import GIB, Rehearsal, RehearseOptions, monotone_floor

    assert monotone_floor([(0.1, 4, 5.0), (0.1, 2, 3.0), (0.2, 2, 4.0)], 0.2, 1) == 0.0
    assert monotone_floor([(0.1, 4, 5.0), (0.1, 2, 3.0), (0.2, 2, 4.0)], 0.2, 2) == 4.0
    assert monotone_floor([(0.1, 4, 5.0), (0.1, 2, 3.0)], 0.15, 4) == 5.0

    opts = RehearseOptions(config=str(_config(tmp_path, stages="[qa_sft]")),
                           model=str(MODELS / "Qwen2.5-VL-3B-Instruct"), out=str(tmp_path / "rh"), budget_gib=10.5,
                           full=False)
    r = Rehearsal(opts, say=lambda _m: None)
    ran = []

    def fake_run(stage, v):          # peak = exact state + a rest of 0.1 GiB per sample
        ran.append((v.depth.text, v.micro_batch))
        peak = r.state_at(stage, v.depth).total + int(0.1 * GIB * v.micro_batch)
        step = {"seconds": 1.0, "generate_seconds": 0.0, "optimizer_seconds": 0.1, "data_seconds": 0.0,
                "generated_tokens": 0.0, "op_seconds": None, "peak_bytes": peak}
        v.result = {"steps": [step] * 3, "after_peak": peak, "stage_seconds": 3.0, "wall_seconds": 4.0}
        return v

    monkeypatch.setattr(r, "run_variant", fake_run)
    monkeypatch.setattr(r, "free_now", lambda: 64 * GIB)
    out = r.rehearse_stage("qa_sft")
    assert (2, 4) in ran and not [d for d, _ in ran if d == 4]      # 4 layers: 10.97 GiB of state alone
    assert 3 in {d for d, _ in ran}                                # the depth between, measured
    assert out.summary["rest"]["how"] == "extrapolated"


def test_a_variant_waits_for_memory_other_processes_hold(tmp_path, monkeypatch):
    """Memory other processes hold is waited for (not a skipped variant, which would leave the stage without
    its fit); when it never frees, the refusal says so instead of 'ran over the budget'."""
    from hatch_vlm.rehearse import runner as rr
    from hatch_vlm.rehearse.runner import GIB, Rehearsal, RehearseOptions

    opts = RehearseOptions(config=str(_config(tmp_path, stages="[qa_sft]")),
                           model=str(MODELS / "Qwen2.5-VL-3B-Instruct"), out=str(tmp_path / "rh"), budget_gib=30,
                           full=False, wait_minutes=1)
    said = []
    r = Rehearsal(opts, say=said.append)
    clock = [0.0]
    monkeypatch.setattr(rr.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(rr.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    free = iter([2 * GIB, 2 * GIB, 2 * GIB, 64 * GIB])          # frees after two polls (20 s)
    monkeypatch.setattr(r, "free_now", lambda: next(free, 64 * GIB))
    assert r.wait_for_memory(10 * GIB, "[qa_sft] 2L/2V b4") and clock[0] == 20.0
    assert "waiting up to 1 min" in said[-1]

    monkeypatch.setattr(r, "free_now", lambda: 2 * GIB)          # never frees: skipped after the minute
    monkeypatch.setattr(r, "run_variant", lambda *a: pytest.fail("a variant ran without the memory"))
    with pytest.raises(ConfigError, match="other processes hold the memory it needs"):
        r.rehearse_stage("qa_sft")


def test_a_variant_without_the_disk_it_would_write_is_not_run(tmp_path, monkeypatch):
    """A variant writes its random-weight model and the stage's trained model: without the disk for them it is
    skipped before it runs (a full disk ended a 4B PaStA variant only when it saved, after minutes of steps)."""
    import shutil
    from collections import namedtuple

    from hatch_vlm.rehearse.runner import GIB, Rehearsal, RehearseOptions

    opts = RehearseOptions(config=str(_config(tmp_path, stages="[pasta]")),
                           model=str(MODELS / "Qwen2.5-VL-3B-Instruct"), out=str(tmp_path / "rh"), budget_gib=30)
    r = Rehearsal(opts, say=lambda _m: None)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(100 * GIB, 99 * GIB, GIB))
    monkeypatch.setattr(r, "model_for", lambda _d: pytest.fail("a model was built without the disk for it"))
    with pytest.raises(ConfigError, match=r"pasta: no variant ran: 2L/2V b4: needs ~.* GiB of disk"):
        r.rehearse_stage("pasta")


def test_pasta_is_fitted_over_the_vision_blocks(tmp_path):
    """PaStA's costs grow with the vision blocks (the LLM is frozen): its x is their share, where the other
    stages' is the share of all repeated layers' parameters; Qwen3-VL-4B's ladder (3L/3V, 6L/4V: the deepstack
    floor) is where the two differ most."""
    from hatch_vlm.rehearse.architecture import Depth, depth_fraction
    from hatch_vlm.rehearse.runner import Rehearsal, RehearseOptions

    r = Rehearsal(RehearseOptions(config=str(_config(tmp_path, stages="[pasta, qa_sft]")),
                                  model=str(MODELS / "Qwen3-VL-4B-Instruct"), out=str(tmp_path / "rh"),
                                  budget_gib=30), say=lambda _m: None)
    assert r.depths() == [Depth(3, 3), Depth(6, 4)]
    assert [r.fraction(d, "pasta") for d in r.depths()] == [3 / 24, 4 / 24]
    assert [r.fraction(d, "qa_sft") for d in r.depths()] == [depth_fraction(r.hf, d) for d in r.depths()]
    assert r.fraction(r.full, "pasta") == r.fraction(r.full, "qa_sft") == 1.0


def test_the_lora_state_is_counted_without_a_library_deprecation_on_the_console(tmp_path):
    """peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model: the rehearsal's
    own LoRA accounting (a meta model wrapped in the orchestrator) printed that FutureWarning on the console
    between its stage lines. It is quieted as the trainers quiet it (models.compat)."""
    import warnings

    from hatch_vlm.rehearse.runner import Rehearsal, RehearseOptions

    cfg = _config(tmp_path, stages="[grpo]", extra="")
    cfg.write_text(cfg.read_text().replace("max_completion_length: 8}", "max_completion_length: 8, lora: {r: 8}}"))
    r = Rehearsal(RehearseOptions(config=str(cfg), model=str(MODELS / "Qwen2.5-VL-3B-Instruct"),
                                  out=str(tmp_path / "rh")), say=lambda _m: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        state = r.state_at("grpo", r.full)
    assert 0 < state.grads < state.weights             # LoRA: a small trained share of the 3B


def test_on_a_cuda_host_the_variants_run_and_are_budgeted_on_the_gpu(tmp_path, monkeypatch):
    """The same command on a GPU host: the budget is the GPU's free memory (read in a child process, so the
    orchestrator holds no CUDA context), the workers measure on "cuda" (max_memory_allocated, no library
    baseline), the host's resident-set watchdog and the CPU-only replacements are off. Before, the spec said
    "cpu" whatever the host: a GPU rehearsal would have measured the host's resident set."""
    import subprocess

    from hatch_vlm.rehearse import memory, runner
    from hatch_vlm.rehearse.runner import Rehearsal, RehearseOptions, Variant
    from hatch_vlm.rehearse.worker import OVER_BUDGET

    monkeypatch.setattr(memory, "rehearsal_device", lambda: "cuda")
    monkeypatch.setattr(memory, "_cuda_free_bytes", lambda: 70 * 1024 ** 3)
    r = Rehearsal(RehearseOptions(config=str(_config(tmp_path, stages="[qa_sft]")), out=str(tmp_path / "rh")),
                  say=lambda _m: None)
    assert r.device == "cuda" and r.budget == 66 * 1024 ** 3
    assert not any("cpu_costs" in n for n in r.notes)
    specs = []

    def fake_run(cmd, **kw):                 # the worker's command line: capture its spec, report over budget
        specs.append(json.loads(Path(cmd[-2]).read_text()))
        return subprocess.CompletedProcess(cmd, OVER_BUDGET)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    v = r.run_variant("qa_sft", Variant(r.full, 4, 1.0))
    assert v.over_budget and specs[0]["device"] == "cuda" and specs[0]["max_rss_gib"] is None


def test_a_cuda_out_of_memory_ends_the_variant_as_over_budget(tmp_path, monkeypatch):
    import torch

    from hatch_vlm.rehearse import worker

    def oom(_spec):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(worker, "run_spec", oom)
    spec, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec.write_text(json.dumps({"device": "cuda", "max_rss_gib": None}))
    assert worker.main([str(spec), str(result)]) == worker.OVER_BUDGET
    assert json.loads(result.read_text())["over_budget"] is True
