"""Held-out rewards of greedy ActoR completions: how well a model writes the format, the answer and the
actions on samples it never trained on (the pipeline checks the cold start with it)."""
from __future__ import annotations

from collections.abc import Sequence

from ..data.record import Sample
from .formatting import grpo_row
from .generation import evaluate_rewards, generate_completions


def held_out_rewards(model, processor, samples: Sequence[Sample], max_new_tokens: int,
                     batch_size: int = 8) -> dict[str, float]:
    """Mean format / answer / action rewards of greedy completions on `samples`, overall and per view count
    (keys "format@2views", ...: more views mean more pair blocks, so the format is harder). Under a
    multi-process launch every rank must call it (the samples are split across ranks)."""
    from ..utils import distributed as dist

    rows = [grpo_row(s) for s in samples]
    # Under a multi-process launch each rank generates for its share of the samples.
    comps = dist.gather_list(generate_completions(model, processor, dist.shard(rows),
                                                  max_new_tokens=max_new_tokens, batch_size=batch_size),
                             len(rows))
    result = evaluate_rewards(comps, rows)
    for v in sorted({r["num_views"] for r in rows}):
        idx = [k for k, r in enumerate(rows) if r["num_views"] == v]
        sub = evaluate_rewards([comps[k] for k in idx], [rows[k] for k in idx])
        result[f"format@{v}views"] = sub["format"]
    return result
