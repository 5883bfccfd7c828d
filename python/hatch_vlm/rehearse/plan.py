"""The GPU plan: per stage, the predicted per-GPU peak on N GPUs of G GiB under an engine, FITS or OVER, and
the smallest change that fits.

per-GPU peak = model state under the engine (accounting.per_gpu, exact) + activations and workspace (the
rehearsal's measured or extrapolated rest, less this process's library baseline, which a GPU does not hold)
+ `HEADROOM_GIB` (the CUDA context, cuBLAS / NCCL workspaces and allocator fragmentation, not measured here).

Changes tried, cheapest first (the first that fits is the answer): a smaller micro-batch with more
accumulation (the same global batch: the training is unchanged), a sharding engine (zero2, then zero3 /
fsdp: unchanged training, more communication), both, and last LoRA on a full fine-tuning stage (a different
method: said so).
"""
from __future__ import annotations

from dataclasses import dataclass

from .accounting import ENGINES, ModelState, per_gpu

GIB = 1024 ** 3
HEADROOM_GIB = 3.0
ENGINE_ORDER = ("ddp", "zero2", "zero3", "fsdp")


@dataclass
class StagePlan:
    stage: str
    engine: str
    gpus: int
    gpu_mem_gib: float
    micro_batch: int
    weights: float
    grads: float
    optimizer: float
    activations: float
    activations_how: str
    headroom: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.headroom

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_mem_gib * GIB

    def to_dict(self) -> dict:
        return {**self.__dict__, "total": self.total, "fits": self.fits}


def _state(summary: dict) -> ModelState:
    d = dict(summary["state_full"])
    d.pop("total", None)
    return ModelState(**d)


def activations_at(summary: dict, b: int) -> tuple[float, str]:
    """Activations + workspace per GPU at micro-batch `b`, full depth: from the rest fit when it spans
    micro-batches, else scaled in proportion to `b` from the config's (an assumption, said so)."""
    from .fit import fit_cost

    base = summary.get("process_baseline") or 0.0
    b_cfg = summary["micro_batch"]
    pts = [tuple(p) for p in summary.get("rest_fit_points", [])]
    if b == b_cfg and summary.get("gpu_rest") is not None:
        return max(0.0, summary["gpu_rest"]), summary["rest"]["how"]
    if pts and len({p[1] for p in pts}) >= 2:
        return max(0.0, fit_cost(pts)(1.0, b) - base), "extrapolated"
    if summary.get("gpu_rest") is None:
        return 0.0, "not measured"
    return max(0.0, summary["gpu_rest"] * b / b_cfg), "scaled with the micro-batch (assumed proportional)"


def plan_stage(summary: dict, engine: str, gpus: int, gpu_mem_gib: float, b: int | None = None,
               state: ModelState | None = None) -> StagePlan:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    b = b or summary["micro_batch"]
    sh = per_gpu(state or _state(summary), engine, gpus, summary.get("largest_layer", 0))
    act, how = activations_at(summary, b)
    if summary["stage"] == "eval":        # no gradients, no optimizer: only the weights are held
        sh.grads = sh.optimizer = 0.0
    return StagePlan(summary["stage"], engine, gpus, gpu_mem_gib, b, sh.weights, sh.grads, sh.optimizer, act,
                     how, HEADROOM_GIB * GIB)


def _halvings(b: int) -> list[int]:
    out, x = [], b
    while x > 1:
        x //= 2
        out.append(max(1, x))
    return out


def smallest_change(summary: dict, engine: str, gpus: int, gpu_mem_gib: float, lora_state=None) -> dict | None:
    """None when the stage fits as configured; else the first change (module doc) that fits, as
    {"change": text, "plan": StagePlan dict}, or {"change": None, "why": ...} when none does."""
    if plan_stage(summary, engine, gpus, gpu_mem_gib).fits:
        return None
    b = summary["micro_batch"]
    a = summary.get("micro_batches_per_step", 1)
    later = ENGINE_ORDER[ENGINE_ORDER.index(engine) + 1:] if engine in ENGINE_ORDER else ()
    tries: list[tuple[str, str, int, object]] = []
    for b2 in _halvings(b):
        tries.append((f"per_device_train_batch_size {b2} with {a * b // b2} micro-batches per step "
                      f"(gradient_accumulation_steps x{b // b2}; same global batch)", engine, b2, None))
    for e in later:
        tries.append((f"engine {e}", e, b, None))
        for b2 in _halvings(b):
            tries.append((f"engine {e} + per_device_train_batch_size {b2} (x{b // b2} accumulation)", e, b2, None))
    if lora_state is not None:
        for e in (engine, *later):
            tries.append((f"LoRA instead of full fine-tuning (a different method) under {e}", e, b, lora_state))
            for b2 in _halvings(b):
                tries.append((f"LoRA instead of full fine-tuning (a different method) under {e} + "
                              f"per_device_train_batch_size {b2} (x{b // b2} accumulation)", e, b2, lora_state))
    for text, e, b2, st in tries:
        p = plan_stage(summary, e, gpus, gpu_mem_gib, b2, st)
        if p.fits:
            return {"change": text, "plan": p.to_dict()}
    return {"change": None, "why": f"nothing tried fits {gpus} x {gpu_mem_gib:g} GiB"}
