"""A picture of one sample: its views (with the PaStA cell grid), their depth, and lines joining the
cells of consecutive views that see the same surface (the strongest entries of the symmetric overlap
S = (M[a,b] + M[b,a]^T) / 2 from ``hatch_ext.ops.patch_overlap``), with the question and gold answer.

    draw_sample(sample, "sample.png", grid=4, top=8)
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from .common import DataError
from .record import Sample


def cell_overlap(sample: Sample, grid: int, overlap_fn=None) -> np.ndarray:
    """Symmetric overlap S `[V, V, P, P]` of a sample (P = grid^2), from `overlap_fn` (default
    ``hatch_ext.ops.patch_overlap``; any function with its signature, e.g. the reference)."""
    import torch

    if overlap_fn is None:
        import hatch_ext

        overlap_fn = hatch_ext.ops.patch_overlap
    depth = torch.as_tensor(np.asarray(sample.depth, dtype=np.float32))[None]
    K = torch.as_tensor(np.asarray(sample.K, dtype=np.float32))[None]
    T = torch.as_tensor(np.asarray(sample.cam_to_world, dtype=np.float32))[None]
    M = overlap_fn(depth, K, T, grid).double()[0]                # [V, V, P, P]
    return (0.5 * (M + M.transpose(0, 1).transpose(-1, -2))).numpy()


def top_pairs(S_ab: np.ndarray, top: int) -> list[tuple[int, int, float]]:
    """The `top` largest entries (i, j, value) of one view pair's [P, P] overlap, value > 0."""
    flat = np.argsort(S_ab, axis=None)[::-1][:top]
    P = S_ab.shape[1]
    return [(int(k // P), int(k % P), float(S_ab.flat[k])) for k in flat if S_ab.flat[k] > 0]


def draw_sample(sample: Sample, out, grid: int = 4, top: int = 8, overlap_fn=None) -> Path:
    """Draw `sample` to the PNG `out` (see module doc). Needs depth, K and poses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import ConnectionPatch

    if not sample.has_geometry:
        raise DataError(f"draw_sample: sample {sample.id!r} has no depth/K/cam_to_world to draw overlaps from")
    V = sample.num_views
    S = cell_overlap(sample, grid, overlap_fn)
    fig, axes = plt.subplots(2, V, figsize=(3.6 * V, 7.4), squeeze=False)
    vmax = float(np.nanmax(np.where(sample.depth > 0, sample.depth, np.nan)))
    for v in range(V):
        ax = axes[0, v]
        img = sample.images[v]
        H, W = img.shape[:2]
        ax.imshow(img)
        for k in range(1, grid):               # the cell grid (cells are fractions of the image)
            ax.axhline(k * H / grid - 0.5, color="white", lw=0.6, alpha=0.6)
            ax.axvline(k * W / grid - 0.5, color="white", lw=0.6, alpha=0.6)
        ax.set_title(f"Image {v + 1}", fontsize=10)
        ax.axis("off")
        dax = axes[1, v]
        im = dax.imshow(sample.depth[v], cmap="viridis", vmin=0, vmax=vmax)
        dax.set_title(f"depth {v + 1} (m)", fontsize=10)
        dax.axis("off")
    fig.colorbar(im, ax=list(axes[1]), fraction=0.03, pad=0.02)
    cmap = plt.get_cmap("autumn")
    for a in range(V - 1):
        b = a + 1
        Ha, Wa = sample.images[a].shape[:2]
        Hb, Wb = sample.images[b].shape[:2]
        for n, (i, j, val) in enumerate(top_pairs(S[a, b], top)):
            ya, xa = ((i // grid) + 0.5) * Ha / grid, ((i % grid) + 0.5) * Wa / grid
            yb, xb = ((j // grid) + 0.5) * Hb / grid, ((j % grid) + 0.5) * Wb / grid
            col = cmap(n / max(top - 1, 1))
            con = ConnectionPatch(xyA=(xa, ya), coordsA=axes[0, a].transData, xyB=(xb, yb),
                                  coordsB=axes[0, b].transData, color=col, lw=0.8 + 3 * val, alpha=0.9)
            fig.add_artist(con)
            axes[0, a].plot(xa, ya, "o", color=col, ms=4)
            axes[0, b].plot(xb, yb, "o", color=col, ms=4)
    q = sample.question + ("  " + "  ".join(sample.options) if sample.options else "")
    title = "\n".join(textwrap.wrap(q, 110)[:4]) + f"\ngold: {sample.answer}   [{sample.task}, {sample.category}]"
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(top=0.84, bottom=0.05)
    fig.text(0.5, 0.005, f"lines: top {top} cell overlaps S (grid {grid}x{grid}) between consecutive views; "
                         f"width ~ overlap", ha="center", fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
