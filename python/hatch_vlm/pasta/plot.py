"""Picture of cross-view cell matches for one sample: geometric (from depth) vs predicted (from the
vision tower's cell embeddings)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hatch_vlm.data.record import Sample  # noqa: E402
from hatch_ext.ops import ABS_TOL, REL_TOL, STRIDE  # noqa: E402

from .cells import cell_embeddings  # noqa: E402
from .loss import patch_overlap  # noqa: E402
from .metrics import geometry_tensors, symmetric_overlap  # noqa: E402


def _centre(i: int, grid: int, H: int, W: int, x_offset: float) -> tuple[float, float]:
    r, c = divmod(i, grid)
    return x_offset + (c + 0.5) * W / grid, (r + 0.5) * H / grid


def plot_matches(model, processor, sample: Sample, grid: int, path: str | Path, view_a: int = 0,
                 view_b: int = 1, abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL,
                 stride: int = STRIDE) -> Path:
    """Save a two-panel figure: views a and b side by side with an n x n grid; top, each valid cell of a
    joined to its geometric match in b (argmax_j S); bottom, to its predicted match (argmax_j cos), green
    where it hits a geometric best match, red where not. Returns the path."""
    if not (0 <= view_a < sample.num_views and 0 <= view_b < sample.num_views and view_a != view_b):
        raise ValueError(f"need two different views of the {sample.num_views} views, got {view_a}, {view_b}")
    with torch.no_grad():
        emb = cell_embeddings(model, processor, [sample], grid)[0].float().cpu()
        depth, K, T = geometry_tensors([sample])
        S = symmetric_overlap(patch_overlap(depth, K, T, grid, grid, abs_tol, rel_tol, stride).double())[0]
    S_ab = S[view_a, view_b]
    e = F.normalize(emb.double(), dim=-1)
    cos = e[view_a] @ e[view_b].T
    img_a, img_b = sample.images[view_a], sample.images[view_b]
    H = max(img_a.shape[0], img_b.shape[0])
    canvas = np.zeros((H, img_a.shape[1] + img_b.shape[1], 3), dtype=np.uint8)
    canvas[:img_a.shape[0], :img_a.shape[1]] = img_a
    canvas[:img_b.shape[0], img_a.shape[1]:] = img_b

    fig, axes = plt.subplots(2, 1, figsize=(8, 8.5))
    hits = 0
    rows = 0
    for ax, title in zip(axes, ("geometric match (argmax_j S_ij)", "predicted match (argmax_j cos)")):
        ax.imshow(canvas)
        for img, x0 in ((img_a, 0), (img_b, img_a.shape[1])):
            for k in range(1, grid):
                ax.axhline(k * img.shape[0] / grid, xmin=x0 / canvas.shape[1],
                           xmax=(x0 + img.shape[1]) / canvas.shape[1], color="w", lw=0.5, alpha=0.6)
                ax.axvline(x0 + k * img.shape[1] / grid, color="w", lw=0.5, alpha=0.6)
        ax.set_title(title)
        ax.axis("off")
    for i in range(grid * grid):
        if S_ab[i].sum() <= 0:
            continue
        rows += 1
        xa, ya = _centre(i, grid, *img_a.shape[:2], 0)
        j_geo = int(S_ab[i].argmax())
        j_pred = int(cos[i].argmax())
        hit = bool(S_ab[i, j_pred] >= S_ab[i].max())
        hits += hit
        xb, yb = _centre(j_geo, grid, *img_b.shape[:2], img_a.shape[1])
        axes[0].plot([xa, xb], [ya, yb], "-o", color="deepskyblue", lw=1.2, ms=3)
        xp, yp = _centre(j_pred, grid, *img_b.shape[:2], img_a.shape[1])
        axes[1].plot([xa, xp], [ya, yp], "-o", color="lime" if hit else "red", lw=1.2, ms=3)
    axes[1].set_title(f"predicted match (argmax_j cos): {hits}/{rows} hit a geometric best match")
    fig.suptitle(f"PaStA cell matches, sample {sample.id or '?'}, view {view_a} -> view {view_b}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
