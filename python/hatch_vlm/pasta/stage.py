"""The PaStA stage of HATCH (`run_pasta_stage`): align the vision encoder's cell embeddings across views,
LLM frozen.

    from hatch_vlm.models.tiny import build_tiny_model
    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.stage import run_pasta_stage
    metrics = run_pasta_stage(PastaConfig(model_dir=str(build_tiny_model("runs/tiny")), output_dir="runs/pasta"))

Built on transformers' `Trainer` (gradient accumulation, checkpoints in safetensors, logging, bf16 autocast
where the GPU supports it). Trainable: the whole vision tower (`tune="full"`, patch embedding, blocks and
merger) or LoRA adapters on its linear layers (`tune="lora"`, merged back into the weights at the end);
every LLM parameter is frozen, so the LLM weights leave the stage bit-identical. The loss is
`hatch_ext.ops.patch_align` on the cell embeddings of `hatch_vlm.pasta.cells` (via `hatch_vlm.pasta.loss`).
The parts: options `hatch_vlm.pasta.config`, scenes and batches `.data`, the loss `.objective`, freezing,
the Trainer and its schedule / callbacks `.trainer`; the command line is `hatch-vlm pasta`.

Outputs in `output_dir`: `final/` (a plain model + processor directory, loadable with
`hatch_vlm.models.loading.load_model_and_processor`), `checkpoint-N/` (Trainer checkpoints every
`save_steps`), `metrics.json`, `log_history.json` and `matches.png` (predicted vs geometric matches).

Measured (tiny model, 2 CPU cores shared with other jobs, load average ~8):

    hatch-vlm pasta --tiny --output-dir runs/pasta --num-train 512 --max-steps 400 --max-seconds 300

trained 212 steps (batch 8, two 112 px views, n = 4) in 301 s and raised the top-1 correspondence accuracy
on 32 held-out synthetic scenes (708 valid rows) from 22.5 % to 43.4 % (mean rank 5.14 -> 2.99; chance
6.25 %, rank 8.5).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import TrainingArguments

from hatch_vlm.data.record import Sample
from hatch_vlm.models.adapters import adapter_for_model
from hatch_vlm.models.loading import load_model_and_processor, restore_weights
from hatch_vlm.models.saving import gather_full_state, write_trained_model
from hatch_vlm.utils.distributed import is_main

from .cells import vision_parameters
from .config import PastaConfig
from .data import PastaCollator, make_samples
from .metrics import correspondence_metrics
from .trainer import FirstStepClock, PastaTrainer, TimeBudget, freeze_for_pasta, llm_state, use_bf16


def run_pasta_stage(config: PastaConfig, train_samples: Sequence[Sample] | None = None,
                    eval_samples: Sequence[Sample] | None = None) -> dict:
    """Run the PaStA stage; returns metrics before/after on the held-out samples.

    Returns a dict with `before_*` / `after_*` correspondence metrics (top1, mean_rank), `chance_top1`,
    `chance_rank`, `num_eval_rows`, `train_seconds`, `steps`, `train_loss`, `llm_unchanged` (bool; None
    when not checked, see `check_llm_unchanged`), `bf16`, `first_step_unix` (see `FirstStepClock`) and
    `checkpoint` (the final model directory, as a string). Under a multi-process launch the other ranks
    get only `steps`, `train_loss`, `train_seconds`, `llm_unchanged` (None) and `checkpoint`.
    """
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    torch.manual_seed(config.seed)
    # The checkpoint's dtype: the frozen LLM stays there (bf16 for a real checkpoint: half the memory), the
    # trained vision parameters are held in float32 (freeze_for_pasta, models/precision.py)
    model, processor = load_model_and_processor(config.model_dir, device=device,
                                                min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    bf16 = use_bf16(config, device, model)
    adapter = adapter_for_model(model)        # the family's, once: handed to everything below
    if train_samples is None:
        train_samples = make_samples(config, config.num_train, config.train_seed)
    if eval_samples is None:
        eval_samples = make_samples(config, config.num_eval, config.eval_seed)
    if not train_samples or not eval_samples:
        raise ValueError("the PaStA stage needs training and held-out samples "
                         f"(got {len(train_samples)} and {len(eval_samples)})")

    def evaluate(m) -> dict:
        return correspondence_metrics(m, processor, eval_samples, config.grid, config.eval_batch_size,
                                      config.abs_tol, config.rel_tol, config.stride, config.min_overlap, adapter)

    results: dict = {}
    # Under a multi-process launch only rank 0 evaluates.
    if config.evaluate_before and is_main():
        before = evaluate(model)
        results.update({f"before_{k}": before[k] for k in ("top1", "mean_rank")})

    # A resumed run continues from the checkpoint's weights (the "before" metrics stay those of the
    # stage's starting model); see restore_weights for why the Trainer alone would not restore them.
    restore_weights(model, config.resume_from_checkpoint)
    check_llm = config.check_llm_unchanged
    if check_llm is None:
        visual = sum(p.numel() for p in vision_parameters(model, adapter))
        check_llm = sum(p.numel() for p in model.parameters()) - visual < 50_000_000
    frozen = llm_state(model, adapter) if check_llm else None
    model = freeze_for_pasta(model, config, adapter)
    args = TrainingArguments(
        output_dir=str(out), max_steps=config.max_steps, per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type, max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps, save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500, save_total_limit=config.save_total_limit, report_to="none",
        remove_unused_columns=False, dataloader_num_workers=config.num_workers, bf16=bf16, use_cpu=device.type == "cpu",
        seed=config.seed, disable_tqdm=False, **config.extra_training_args)
    clock = FirstStepClock()
    # A list, or a lazily decoding dataset (hatch_vlm.data.spar7m.SparSamples): each rank's sampler picks its
    # indices and only those records are read.
    trainer = PastaTrainer(model=model, args=args, train_dataset=train_samples,
                           data_collator=PastaCollator(processor, adapter), processing_class=processor,
                           callbacks=[TimeBudget(config.max_seconds), clock], pasta_config=config,
                           adapter=adapter)
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    train_seconds = time.perf_counter() - start

    final = out / "final"
    accelerator = trainer.accelerator
    # Under FSDP / ZeRO-3 the parameters are sharded: gather them (every rank) before rank 0 saves.
    full_state = gather_full_state(trainer)
    if not accelerator.is_main_process:
        # Multi-process launch: only rank 0 saves, evaluates and writes (the others would race on the
        # same files); the others wait so that `final/` exists when they return.
        accelerator.wait_for_everyone()
        return {"steps": trainer.state.global_step, "train_loss": float(train_out.training_loss),
                "train_seconds": train_seconds, "llm_unchanged": None, "checkpoint": str(final)}
    model = write_trained_model(trainer, final, full_state)
    processor.save_pretrained(final)
    if full_state is not None:
        # the in-memory model is a shard: evaluate (and check) the saved, whole one (processor included)
        model, _ = load_model_and_processor(final, dtype=torch.float32, device=device,
                                            min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    model.eval()
    llm_unchanged = None
    if frozen is not None:
        after_state = llm_state(model, adapter)
        llm_unchanged = after_state.keys() == frozen.keys() and all(
            torch.equal(after_state[k], frozen[k].to(after_state[k].device)) for k in frozen)
        del frozen, after_state
    after = evaluate(model)
    results.update({f"after_{k}": after[k] for k in ("top1", "mean_rank")})
    results.update({"chance_top1": after["chance_top1"], "chance_rank": after["chance_rank"],
                    "num_eval_rows": after["num_rows"], "train_seconds": train_seconds,
                    "steps": trainer.state.global_step, "train_loss": float(train_out.training_loss),
                    "llm_unchanged": llm_unchanged, "bf16": bf16, "first_step_unix": clock.unix,
                    "checkpoint": str(final)})
    (out / "metrics.json").write_text(json.dumps({**results, "config": asdict(config)}, indent=2))
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    if config.plot:
        from .plot import plot_matches

        plot_matches(model, processor, eval_samples[0], config.grid, out / "matches.png",
                     abs_tol=config.abs_tol, rel_tol=config.rel_tol, stride=config.stride)
    accelerator.wait_for_everyone()
    return results
