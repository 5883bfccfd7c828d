"""Two costs a CPU pays in our stages that a GPU does not, replaced inside a rehearsal worker on a CPU.

A rehearsal on a CPU measures memory and the shape of the costs; its seconds never transfer to a GPU. Two
CPU-only slow paths made up a third of a 3B rehearsal's wall time without telling anything about a GPU run,
so the rehearsal worker (only it: `hatch-vlm train` is untouched) swaps them for equivalents:

* TRL's chunked log-prob backward (`trl.kernels.chunked_logprob._addmm_fp32`): on CUDA it multiplies the
  bf16 tiles with a float32 output (`torch.addmm(..., out_dtype=float32)`); torch has no CPU kernel for that,
  so TRL upcasts both tiles to float32 and runs a float32 matmul, ~4x slower here than a bf16 one (0.22 s
  against 0.054 s for 2048 x 2048 x 4096; float32 copies of both tiles that CUDA does not make). Here: the
  bf16 product, added to the float32 accumulator. It rounds each tile's product to bf16, a numerical
  difference over a few rehearsal steps; the float32 copies of the tiles (which CUDA does not make) are gone
  from the measured rest (the 3B's GRPO: 24.9 -> 21.0 GiB peak here).
* `torch.multinomial` drawing one token per row from a vocabulary-sized distribution: 47 ms for 8 rows of
  151,936 here (a GPU: well under a millisecond), once per generated token (24 s of every 512-token GRPO round).
  Here: inverse-CDF sampling (a cumulative sum and a binary search, 3 ms), the same distribution.

`apply()` is called once by the worker when it runs on a CPU; the report says so (`NOTE`).
"""
from __future__ import annotations

import torch

NOTE = ("on CPU, two CPU-only slow paths are replaced in the rehearsal's workers (hatch_vlm.rehearse.cpu_costs): "
        "TRL's float32 upcast in its chunked log-prob backward (CUDA multiplies the bf16 tiles with a float32 "
        "output) and torch.multinomial's one draw per generated token (inverse-CDF sampling instead, the same "
        "distribution); seconds are this CPU's; memory: only the float32 tile copies the CPU path made (a GPU makes "
        "none) are gone")

_ORIGINAL_MULTINOMIAL = torch.multinomial


def sample_one(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of `probs` (rows of non-negative weights, not necessarily normalised), drawn with
    probability proportional to its weight: `torch.multinomial(probs, 1)`'s distribution. A zero weight is
    never drawn (the search takes the first cumulative sum strictly above the draw)."""
    cum = probs.cumsum(-1, dtype=torch.float64)
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, dtype=torch.float64, device=probs.device)
    idx = torch.searchsorted(cum, u * cum[..., -1:], right=True)
    last = probs.size(-1) - 1
    if bool((idx > last).any()):          # a draw that rounded onto the total: the last token with weight
        nonzero = torch.arange(probs.size(-1), device=probs.device).expand_as(probs).masked_fill(probs <= 0, -1)
        idx = torch.where(idx > last, nonzero.amax(-1, keepdim=True), idx)
    return idx


def _multinomial(input, num_samples, replacement=False, *, generator=None, out=None):
    if (num_samples == 1 and out is None and input.device.type == "cpu" and input.dim() in (1, 2)
            and input.is_floating_point()):
        return sample_one(input, generator)
    return _ORIGINAL_MULTINOMIAL(input, num_samples, replacement, generator=generator, out=out)


def _addmm_bf16(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """`acc += a @ b` for a float32 `acc`: on CPU with bf16 tiles, the bf16 product added (see module doc)."""
    if acc.device.type == "cpu" and a.dtype == torch.bfloat16 and b.dtype == torch.bfloat16:
        acc.add_(torch.mm(a, b))
    else:
        acc.addmm_(a.float(), b.float())


def apply() -> list[str]:
    """Install both replacements in this process; returns what was replaced (TRL's helper is left alone
    when this TRL has none of that name)."""
    done = []
    torch.multinomial = _multinomial
    done.append("torch.multinomial")
    try:
        from trl.kernels import chunked_logprob
    except ImportError:
        return done
    if callable(getattr(chunked_logprob, "_addmm_fp32", None)):
        chunked_logprob._addmm_fp32 = _addmm_bf16
        done.append("trl.kernels.chunked_logprob._addmm_fp32")
    return done
