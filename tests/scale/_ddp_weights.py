"""Model weights as safetensors files and each rank's record, for the multi-process tests' 1-vs-2-process
comparisons."""
from __future__ import annotations

from pathlib import Path


def save_weights(model, path: Path) -> None:
    """All of `model`'s state (cloned, so tied weights save as separate tensors) to `path`."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))


def max_weight_diff(a: Path, b: Path) -> float:
    """Largest absolute difference over all tensors of two weight files with the same keys."""
    from safetensors.torch import load_file

    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys() and len(wa) > 10, (sorted(wa)[:5], sorted(wb)[:5])
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def save_rank_outputs(trainer, out: Path, **record) -> None:
    """OUT/rank{R}.json (the trainer's log history, the world size and `record`) on every rank, and the
    trained weights OUT/final.safetensors on rank 0."""
    import json

    from hatch_vlm.models.saving import gather_full_state, is_sharded

    rank = trainer.accelerator.process_index
    # sharded engines (FSDP, ZeRO-3): the whole state, gathered by every rank (a collective), saved by rank 0
    full = gather_full_state(trainer) if not hasattr(trainer.accelerator.unwrap_model(trainer.model),
                                                     "merge_and_unload") else None
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"log_history": trainer.state.log_history, "world_size": trainer.accelerator.num_processes,
         "sharded": is_sharded(trainer.accelerator), **record}, default=float))
    if rank == 0 and full is not None:
        from safetensors.torch import save_file

        save_file({k: v.detach().clone().contiguous() for k, v in full.items()}, str(out / "final.safetensors"))
    elif rank == 0:
        save_weights(trainer.accelerator.unwrap_model(trainer.model), out / "final.safetensors")
