"""Model-state bytes, exactly: weights, gradients and optimizer state (Σ numel × dtype size), and how each
engine divides them over N GPUs.

`model_state(model)` counts what a Trainer holds for a model as the stage left it (trainable parameters
marked by `requires_grad`, each counted once even when tied): weights at each parameter's dtype, one
gradient per trainable parameter at its dtype, and torch AdamW's state (`exp_avg`, `exp_avg_sq` at the
parameter's dtype, and a float32 `step` scalar per trainable tensor). `measured_state(model, optimizer)` reads
the same three from the live tensors after an optimizer step; the two agree to the byte (tests/rehearse).

Engines (`per_gpu`), for trainable parameters T (numel), frozen F, N GPUs; `ddp` is what our trainers do
(trainable parameters in float32 under bf16 autocast, AdamW at float32); DeepSpeed and FSDP hold their
own copies (the usual mixed-precision accounting of the ZeRO paper: 2 + 2 + 12 bytes per parameter):

    engine  weights                       gradients        optimizer
    ddp     as held (4 T + f F)           4 T (×2, N > 1)  8 T (+ steps)   (DDP's buckets: a second copy)
    zero2   2 T + f F                     2 T / N          12 T / N     (fp32 master + 2 moments)
    zero3   (2 T + f F) / N               2 T / N          12 T / N
    fsdp    (4 T + f F) / N               4 T / N          8 T / N      (FSDP2: fp32 shards, bf16 compute)

f is the frozen parameters' byte size (the checkpoint's dtype: 2 for bf16). Under zero3 / fsdp the layer being
computed is gathered whole: `largest_layer` bytes are added to the weights (an all-gather buffer).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

ENGINES = ("ddp", "zero2", "zero3", "fsdp")
ADAM_MOMENTS = 2


@dataclass
class ModelState:
    """Bytes of a model's training state on one process, and the parameter counts behind them."""
    weights: int
    grads: int
    optimizer: int
    trainable: int            # trainable parameters (numel)
    frozen: int               # frozen parameters (numel)
    trainable_bytes: int      # bytes of the trainable weights as held
    frozen_bytes: int         # bytes of the frozen weights as held
    trainable_tensors: int    # AdamW keeps one `step` scalar per trainable tensor

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def unique_parameters(model) -> list[torch.nn.Parameter]:
    """Each parameter once (tied weights, e.g. embeddings and LM head, share one tensor)."""
    seen, out = set(), []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _bytes(p: torch.Tensor) -> int:
    return p.numel() * p.element_size()


def model_state(model, optimizer: str = "adamw") -> ModelState:
    """The training state a Trainer will hold for `model` (as the stage prepared it), predicted exactly.

    `optimizer`: "adamw" (torch's: two moments at the parameter's dtype + a float32 step per tensor) or
    "sgd" (no state)."""
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    params = unique_parameters(model)
    train = [p for p in params if p.requires_grad]
    frozen = [p for p in params if not p.requires_grad]
    t_bytes = sum(_bytes(p) for p in train)
    f_bytes = sum(_bytes(p) for p in frozen)
    opt = ADAM_MOMENTS * t_bytes + 4 * len(train) if optimizer == "adamw" else 0
    return ModelState(weights=t_bytes + f_bytes, grads=t_bytes, optimizer=opt,
                      trainable=sum(p.numel() for p in train), frozen=sum(p.numel() for p in frozen),
                      trainable_bytes=t_bytes, frozen_bytes=f_bytes, trainable_tensors=len(train))


def measured_state(model, optimizer: torch.optim.Optimizer | None) -> dict:
    """The three parts read from the live tensors: every parameter, every `.grad` that exists, every tensor
    in the optimizer's state. Call it after an optimizer step and before the gradients are zeroed."""
    params = unique_parameters(model)
    grads = sum(_bytes(p.grad) for p in params if p.grad is not None)
    opt = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            opt += sum(_bytes(v) for v in state.values() if isinstance(v, torch.Tensor))
    return {"weights": sum(_bytes(p) for p in params), "grads": grads, "optimizer": opt}


@dataclass
class ShardedState:
    engine: str
    gpus: int
    weights: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer


def per_gpu(state: ModelState, engine: str, gpus: int, largest_layer: int = 0) -> ShardedState:
    """Model-state bytes on each of `gpus` GPUs under `engine` (table in the module doc).

    `state` is the stage's own state as our trainers hold it (`model_state`); `largest_layer`: bytes of the
    biggest block that zero3 / fsdp gather whole for its computation (weights at the compute dtype)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    t, n = state.trainable, gpus
    if engine == "ddp":
        # DDP reduces gradients through its own buckets, a second gradient-sized buffer (accelerate's DDP does
        # not pass gradient_as_bucket_view); one process has none
        return ShardedState(engine, n, state.weights, state.grads * (2 if n > 1 else 1), state.optimizer)
    if engine == "zero2":
        return ShardedState(engine, n, 2 * t + state.frozen_bytes, 2 * t / n, 12 * t / n)
    if engine == "zero3":
        return ShardedState(engine, n, (2 * t + state.frozen_bytes) / n + largest_layer, 2 * t / n, 12 * t / n)
    return ShardedState(engine, n, (4 * t + state.frozen_bytes) / n + largest_layer, 4 * t / n, 8 * t / n)
