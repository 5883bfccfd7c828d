"""What a stage trains, on a meta-device model: the exact model state of the full-size model without building
it, prepared by the stages' own functions (PaStA's `freeze_for_pasta`, the SFT / GRPO LoRA config and
float32 master weights), so the numbers follow the code that trains.
"""
from __future__ import annotations

from hatch_vlm.models.freezing import freeze_parts
from hatch_vlm.models.precision import upcast_trainable

from .accounting import ModelState, model_state

TRAINING_STAGES = ("pasta", "qa_sft", "actor_sft", "grpo")


def stage_section(cfg, stage: str):
    return getattr(cfg, stage)


def micro_batch(cfg, stage: str) -> int:
    """The config's micro-batch of a stage (eval: its generation batch)."""
    if stage == "eval":
        return cfg.eval.batch_size
    section = stage_section(cfg, stage)
    if stage == "pasta":
        return section.per_device_train_batch_size
    return int(section.setting("per_device_train_batch_size"))


def accumulation(cfg, stage: str) -> int:
    """Micro-batches per optimizer step in the config (GRPO: per generation round, TRL's steps_per_generation
    defaulting to gradient_accumulation_steps)."""
    if stage == "eval":
        return 1
    section = stage_section(cfg, stage)
    if stage == "pasta":
        return section.gradient_accumulation_steps
    return int(section.setting("gradient_accumulation_steps"))


def generation_batch(cfg) -> int:
    """Completions in one GRPO generation round: micro-batch x TRL's steps_per_generation (defaulting to
    gradient_accumulation_steps)."""
    g = cfg.grpo
    spg = g.setting("steps_per_generation") or g.setting("gradient_accumulation_steps")
    return int(g.setting("per_device_train_batch_size")) * int(spg)


def uses_lora(cfg, stage: str) -> bool:
    if stage == "pasta":
        return cfg.pasta.tune == "lora"
    if stage in ("qa_sft", "actor_sft", "grpo"):
        return stage_section(cfg, stage).lora is not None
    return False


def prepare_for_stage(model, cfg, stage: str):
    """`model` (any device, meta included) made trainable as `stage` trains it; returns the model to count."""
    if stage == "pasta":
        from hatch_vlm.pasta.trainer import freeze_for_pasta

        return freeze_for_pasta(model, cfg.pasta.to_pasta_config(model_dir="", output_dir=""))
    if stage == "eval":
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    opts = stage_section(cfg, stage)
    if opts.lora is None:
        freeze_parts(model, opts.freeze)
        upcast_trainable(model)
        return model
    from peft import get_peft_model

    from hatch_vlm.actor.sft import make_lora_config
    from hatch_vlm.models.compat import checkpointing_deprecations_ignored

    with checkpointing_deprecations_ignored():      # peft reads the old checkpointing name (as actor.sft does)
        return get_peft_model(model, make_lora_config(opts.lora, model))


def stage_state(hf_config, cfg, stage: str) -> ModelState:
    """The exact training state of `stage` for the model of `hf_config` (meta device: no memory)."""
    from .architecture import meta_model

    model = prepare_for_stage(meta_model(hf_config), cfg, stage)
    state = model_state(model)
    if stage == "eval":       # no optimizer, no gradients
        state.grads = state.optimizer = 0
    return state


def tied_gradient_transient(hf_config) -> int:
    """Bytes of the float32 gradient the backward of a *tied* embedding / LM head allocates once more at its
    end (the embedding's gradient, summed into the head's) -- in full fine-tuning with the embeddings
    trained; 0 when the two are separate matrices. What a frozen-embedding proxy run does not hold
    (`runner.Rehearsal.proxy_freeze`), added back to its rest."""
    from .architecture import meta_model

    model = meta_model(hf_config)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or emb.weight is not head.weight:
        return 0
    return 4 * emb.weight.numel()


def largest_layer_bytes(hf_config) -> int:
    """Bytes of the biggest repeated block (a decoder layer or a vision block) in the compute dtype: what
    ZeRO-3 / FSDP gather whole for one layer's computation."""
    from .architecture import layer_parameters

    _, per_text, per_vision = layer_parameters(hf_config)
    return 2 * max(per_text, per_vision)
