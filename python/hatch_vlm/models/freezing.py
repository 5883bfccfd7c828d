"""Parts of a model left out of full fine-tuning (`freeze:` in a qa_sft / actor_sft / grpo section).

Full fine-tuning trains every parameter. Two parts are commonly held fixed instead, each saving its share of
the 16-18 bytes per parameter that training costs (float32 master weights, gradients, AdamW's two moments):
  * `vision`: the vision tower with its merger / projector (what PaStA trains; the family adapter names it);
  * `embeddings`: the input embeddings and the output head (one matrix when the checkpoint ties them). Their
    vocabulary-sized matrices are ~1.1B parameters of an 8B model, ~19 GiB of training state.
Frozen parameters keep the checkpoint's dtype and get no gradient or optimizer state.
"""
from __future__ import annotations

FREEZABLE = {
    "vision": "the vision tower and its merger / projector",
    "embeddings": "the input embeddings and the output head (LM head)",
}


def check_freeze(parts, lora) -> list[str]:
    """`parts` as a list of known names; a ValueError naming `freeze` otherwise (or beside LoRA, which
    already trains only its adapters)."""
    parts = list(parts or [])
    unknown = [p for p in parts if p not in FREEZABLE]
    if unknown:
        raise ValueError(f"freeze: unknown part(s) {unknown}; expected a list of "
                         + ", ".join(f"{k} ({v})" for k, v in FREEZABLE.items()))
    if parts and lora is not None:
        raise ValueError(f"freeze: {parts} with lora set: LoRA already trains only its adapters (drop one of them)")
    return parts


def parameters_of(model, part: str) -> list:
    """The parameters of `part` (FREEZABLE) in `model` (any device, meta included)."""
    if part == "vision":
        from .adapters import adapter_for_model

        return adapter_for_model(model).vision_parameters(model)
    if part == "embeddings":
        mods = [model.get_input_embeddings(), model.get_output_embeddings()]
        seen, out = set(), []
        for m in mods:
            if m is not None and id(m.weight) not in seen:
                seen.add(id(m.weight))
                out.append(m.weight)
        return out
    raise ValueError(f"freeze: unknown part {part!r} (expected one of {sorted(FREEZABLE)})")


def freeze_parts(model, parts) -> int:
    """Set `parts` of `model` not trainable, in place; returns the number of parameters frozen.

    With the input embeddings frozen the decoder's input carries no gradient, and re-entrant gradient
    checkpointing would then compute no gradient for the checkpointed layers at all: the inputs are marked
    as requiring one (transformers' `enable_input_require_grads`, what peft does for LoRA)."""
    frozen = 0
    for part in parts or ():
        for p in parameters_of(model, part):
            if p.requires_grad:
                p.requires_grad_(False)
                frozen += p.numel()
    if "embeddings" in (parts or ()) and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    return frozen
