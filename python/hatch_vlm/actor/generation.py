"""Generation from formatted prompt rows and reward evaluation (held-out format / answer / action rewards).

Used after the cold start (is the format learned?) and by tests. Vision special tokens are suppressed during
generation: a sampled `<|image_pad|>` would break the image feature / token count (docs/notes.md); which
tokens those are is the model family's (`hatch_vlm.models.adapters`: `never_generate_tokens`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from hatch_vlm.models.adapters import adapter_for_family, adapter_for_processor

from .rewards import action_reward, answer_reward, format_reward, partial_action_reward

# Qwen2.5-VL's (the default family's); other families: their adapter's `never_generate_tokens`.
VISION_TOKENS = adapter_for_family("qwen2.5-vl").never_generate_tokens


def vision_token_ids(processor) -> list[int]:
    """Ids of the vision special tokens the model must never generate (those the tokenizer knows), for the
    processor's model family (a bare tokenizer: Qwen2.5-VL's tokens)."""
    return adapter_for_processor(processor).never_generate_ids(processor)


@torch.no_grad()
def generate_completions(model, processor, rows: Sequence[dict], max_new_tokens: int = 128,
                         batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0,
                         progress: bool = False, repetition_penalty: float | None = None) -> list[str]:
    """Completions (decoded text, special tokens dropped) for conversational prompt rows.

    rows: dicts with `prompt` (message list, images as `{"type": "image"}` items) and `images` (PIL list).
    Greedy by default (`do_sample=False`), the setting the cold-start format check uses.
    `repetition_penalty`: set explicitly (evaluation uses 1.0: a checkpoint's generation_config may carry
    another); None keeps the model's generation_config.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    tok = processor.tokenizer
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    starts = range(0, len(rows), batch_size)
    for s in tqdm(starts, desc="generate", disable=not progress):
        batch = rows[s:s + batch_size]
        texts = [processor.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                 for r in batch]
        images = [list(r["images"]) for r in batch]
        old_side = tok.padding_side
        tok.padding_side = "left"   # decoder-only generation continues from the right end
        try:
            enc = processor(text=texts, images=images if any(images) else None, return_tensors="pt",
                            padding=True).to(device)
        finally:
            tok.padding_side = old_side
        extra = {} if repetition_penalty is None else {"repetition_penalty": repetition_penalty}
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample, **extra,
                             temperature=temperature if do_sample else None, top_p=None, top_k=None,
                             suppress_tokens=vision_token_ids(processor),
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        out += tok.batch_decode(new, skip_special_tokens=True)
    if was_training:
        model.train()
    return out


def evaluate_rewards(completions: Sequence[str], rows: Sequence[dict]) -> dict[str, float]:
    """Mean format / answer / action rewards (both R_act shapes) of completions against GRPO rows' gold
    columns, and their number `n`."""
    if len(completions) != len(rows):
        raise ValueError(f"{len(completions)} completions for {len(rows)} rows")
    cols = {k: [r.get(k) for r in rows] for k in ("answer", "answer_type", "num_views", "gold_motions")}
    result = {}
    # "action": R_act's product shape (comparable with earlier runs); "action_partial": the partial-credit one
    for name, fn in (("format", format_reward), ("answer", answer_reward), ("action", action_reward),
                     ("action_partial", partial_action_reward)):
        vals = fn(prompts=[r["prompt"] for r in rows], completions=list(completions), **cols)
        result[name] = float(sum(vals) / max(1, len(vals)))
    result["n"] = len(rows)
    return result
