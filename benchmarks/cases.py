"""What is benchmarked: the ops, their problem sizes, the inputs, and the naive baseline's memory estimate.

Suites (a case may belong to several):
    paper        the paper's scale: B = 8 samples, V = 4 views, depth 448 x 448, n = 4 (P = 16), D = 1280
    dense        a cell per merged token: P = 256 (D = 2048) and P = 1024 (D = 1024), B = 2, V = 4
    sweep_image  patch_overlap over the depth-map side (cost grows with pixels x view pairs)
    sweep_P      patch_align over the cells per view P (the naive loss grows with P^2)
    big          patch_align where the naive version would need more than 24 GiB (hatch only)
    tower        a Qwen2.5-VL-3B-sized vision tower, forward + backward (CUDA only): the yardstick of the
                 "PaStA loss <= 5% of the vision tower" target

All inputs are float32; depth and cameras come from `hatch_ext.testing.room_scene` (exact depth, views
that overlap a lot, an occluder); embeddings are standard normal. Inputs are built once per run and
cached on disk (`prepare_inputs`), so every provider sees the very same tensors.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

OPS = ("patch_overlap", "cell_similarity", "soft_infonce", "patch_align", "vision_tower")
DIFFERENTIABLE = {"cell_similarity", "soft_infonce", "patch_align", "vision_tower"}
PASSES = ("forward", "backward", "forward+backward")
DTYPE = torch.float32
SCENE_SEED, EMB_SEED = 0, 1

# Peak bytes of the naive reference per unit (see `naive_peak_estimate`); measured by
# calibration runs on the 2-core dev machine (fwd+bwd, float32, +10%) and recalibrated at
# the start of every report run. The report records the estimate next to every measured naive peak.
DEFAULT_K = {"pix": 34.0, "sim": 3.5, "loss": 9.0}


@dataclass(frozen=True)
class Case:
    op: str
    label: str                      # unique per op, e.g. "paper", "P1024 D1024"
    B: int
    V: int
    H: int = 0                      # depth map size (0: no depth input)
    W: int = 0
    grid: int = 4                   # grid_h = grid_w
    D: int = 0                      # embedding channels (0: no embeddings)
    suites: tuple[str, ...] = ()
    providers: tuple[str, ...] = ("hatch", "naive")
    passes: tuple[str, ...] = field(default=())
    cuda_only: bool = False
    warmup: int | None = None       # warm-up repetitions (None: the run's setting)

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"Case.op: expected one of {OPS}, got {self.op!r}")
        if not self.passes:
            object.__setattr__(self, "passes", PASSES if self.op in DIFFERENTIABLE else ("forward",))

    @property
    def P(self) -> int:
        return self.grid * self.grid

    @property
    def shape(self) -> str:
        parts = [f"B{self.B}", f"V{self.V}"]
        if self.H:
            parts.append(f"{self.H}x{self.W}")
        if self.op != "vision_tower":
            parts.append(f"P{self.P}")
        if self.D:
            parts.append(f"D{self.D}")
        return " ".join(parts)

    def size(self, suite: str) -> int:
        """The x-value of this case in a sweep: pixels per view (sweep_image) or cells per view."""
        return self.H * self.W if suite == "sweep_image" else self.P

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Case:
        d = dict(d)
        for k in ("suites", "providers", "passes"):
            d[k] = tuple(d[k])
        return Case(**d)


ALL_PROVIDERS = ("hatch", "naive", "naive_compiled", "kornia")
BIG = "big P1024 D32"


def full_cases() -> list[Case]:
    """The cases of the full report. Compiled naive runs where a target names it (each shape is
    compiled once, and compiling is slow on 2 cores)."""
    paper = dict(B=8, V=4, H=448, W=448, grid=4)
    ov = [Case("patch_overlap", "paper", **paper, suites=("paper",),
               providers=("hatch", "naive", "naive_compiled", "kornia"))]
    ov += [Case("patch_overlap", f"img {s}", B=2, V=4, H=s, W=s, grid=4, suites=("sweep_image",),
                providers=("hatch", "naive", "kornia")) for s in (112, 224, 448, 672)]
    dense = dict(B=2, V=4, H=448, W=448)
    al = [Case("patch_align", "paper", **paper, D=1280, suites=("paper",), providers=("hatch", "naive")),
          Case("patch_align", "P256 D2048", **dense, grid=16, D=2048, suites=("dense",)),
          Case("patch_align", "P1024 D1024", **dense, grid=32, D=1024, suites=("dense", "sweep_P"),
               providers=("hatch", "naive", "naive_compiled"))]
    al += [Case("patch_align", f"P{g * g} D1024", **dense, grid=g, D=1024, suites=("sweep_P",))
           for g in (8, 16, 24)]
    # Where naive would need > 24 GiB (its footprint is [B, V, V, P, P]-sized tensors, independent of D).
    # D = 32 keeps hatch's run within the report's time budget (measured on 2 busy cores, per sample:
    # fwd+bwd 20 s at D = 256, 9 s at D = 32); no warm-up repetition (no compile, and one rep is long).
    al += [Case("patch_align", BIG, B=8, V=8, H=448, W=448, grid=32, D=32, warmup=0,
                suites=("big",), passes=("forward+backward",))]  # naive: skipped by its estimate
    si = [Case("soft_infonce", "P256 D2048", **dense, grid=16, D=2048, suites=("dense",)),
          Case("soft_infonce", "P1024 D1024", **dense, grid=32, D=1024, suites=("dense",))]
    cs = [Case("cell_similarity", "P256 D2048", B=2, V=4, grid=16, D=2048, suites=("dense",)),
          Case("cell_similarity", "P1024 D1024", B=2, V=4, grid=32, D=1024, suites=("dense",))]
    vt = [Case("vision_tower", "qwen2.5-vl-3b", B=8, V=4, H=448, W=448, suites=("tower",),
               providers=("transformers",), passes=("forward+backward",), cuda_only=True)]
    return ov + al + si + cs + vt


def quick_cases() -> list[Case]:
    """Small versions of every case (same labels and suites), to check the harness in seconds."""
    out = []
    for c in full_cases():
        if c.op == "vision_tower":
            out.append(replace(c, B=1, V=2, H=112, W=112))
            continue
        small = dict(B=min(c.B, 2), V=min(c.V, 3), D=min(c.D, 64))
        if c.H:
            small["H"] = small["W"] = max(16, c.H // 8)
        if c.grid > 4:
            small["grid"] = max(2, c.grid // 4)
        if "big" in c.suites:  # still too big for naive under the quick memory limit, cheap for hatch
            small.update(B=2, V=8, grid=32, H=64, W=64, D=8)
        out.append(replace(c, **small))
    return out


def select(cases: list[Case], ops: list[str] | None = None, suites: list[str] | None = None,
           providers: list[str] | None = None) -> list[Case]:
    sel = [c for c in cases if (not ops or c.op in ops) and (not suites or set(c.suites) & set(suites))]
    if providers:
        sel = [replace(c, providers=tuple(p for p in c.providers if p in providers)) for c in sel]
        sel = [c for c in sel if c.providers]
    return sel


# ------------------------------------------------------------------------------------ memory estimate
def naive_units(case: Case, itemsize: int = 4) -> dict:
    """Sizes (bytes) of the naive reference's dominant intermediates: `pix` = one per-pixel tensor over
    all view pairs [B, V, V, H*W]; `blk` = one similarity-sized tensor [B, V, V, P, P]."""
    return {"pix": case.B * case.V ** 2 * case.H * case.W * itemsize,
            "blk": case.B * case.V ** 2 * case.P ** 2 * itemsize}


def naive_peak_estimate(case: Case, k: dict | None = None) -> int | None:
    """Estimated peak extra bytes of the naive reference (fwd+bwd where differentiable): the naive code
    holds about k_pix per-pixel pair tensors (reprojection) and k_sim / k_loss similarity-sized tensors
    (similarity / loss). k is calibrated from small measured runs (`harness.calibrate`)."""
    k = {**DEFAULT_K, **(k or {})}
    u = naive_units(case)
    if case.op == "patch_overlap":
        return int(k["pix"] * u["pix"] + 2 * u["blk"])
    if case.op == "cell_similarity":
        return int(k["sim"] * u["blk"])
    if case.op == "soft_infonce":
        return int(k["loss"] * u["blk"])
    if case.op == "patch_align":
        return int(k["pix"] * u["pix"] + k["loss"] * u["blk"])
    return None


# Small runs whose measured naive peak gives each k (the other terms are negligible there).
CALIBRATION = {
    "pix": Case("patch_overlap", "calibrate pix", B=1, V=4, H=192, W=192, grid=2, providers=("naive",)),
    "sim": Case("cell_similarity", "calibrate sim", B=1, V=4, grid=24, D=32, providers=("naive",),
                passes=("forward+backward",)),
    "loss": Case("soft_infonce", "calibrate loss", B=1, V=4, H=48, W=48, grid=24, D=32,
                 providers=("naive",), passes=("forward+backward",)),
}


# ------------------------------------------------------------------------------------------- inputs
def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def _cached(cache_dir: Path | None, name: str, make):
    if cache_dir is None:
        return make()
    path = Path(cache_dir) / f"{name}.pt"
    if path.exists():
        return torch.load(path)
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def scene(case: Case, cache_dir: Path | None = None) -> dict:
    from hatch_ext.testing import room_scene

    def make():
        s = room_scene(case.B, case.V, case.H, case.W, seed=SCENE_SEED, dtype=DTYPE)
        return {"depth": s.depth, "K": s.K, "cam_to_world": s.cam_to_world}

    return _cached(cache_dir, "scene_" + _key(case.B, case.V, case.H, case.W, SCENE_SEED), make)


def overlap(case: Case, cache_dir: Path | None = None) -> torch.Tensor:
    """The true overlap M of the case's scene (naive reference), the soft_infonce input."""
    from hatch_ext import reference

    def make():
        s = scene(case, cache_dir)
        with torch.no_grad():
            return reference.patch_overlap(s["depth"], s["K"], s["cam_to_world"], case.grid, case.grid)

    return _cached(cache_dir, "overlap_" + _key(case.B, case.V, case.H, case.W, case.grid, SCENE_SEED),
                   make)


def prepare_inputs(case: Case, cache_dir: Path) -> None:
    """Build and cache the slow parts of a case's inputs (scene rendering, reference overlap) once."""
    if case.op == "vision_tower":
        return
    if case.H:
        scene(case, cache_dir)
    if case.op == "soft_infonce":
        overlap(case, cache_dir)


@dataclass
class Inputs:
    args: tuple                     # positional arguments, identical for every provider
    leaf: torch.Tensor | list | None  # what is differentiated (embeddings; or parameters), requires_grad
    grad_out: torch.Tensor | None   # upstream gradient for non-scalar outputs (cell_similarity)


def build_inputs(case: Case, device: torch.device, cache_dir: Path | None = None) -> Inputs:
    """The case's inputs on `device`; the same for every provider (same seeds, same cached scene)."""
    if case.op == "vision_tower":
        raise ValueError("vision_tower inputs are built by its provider")
    g = torch.Generator().manual_seed(EMB_SEED)
    emb = None
    if case.D:
        emb = torch.randn(case.B, case.V, case.P, case.D, generator=g, dtype=DTYPE).to(device)
        emb.requires_grad_(True)
    cams = ()
    if case.H:
        s = scene(case, cache_dir)
        cams = (s["depth"].to(device), s["K"].to(device), s["cam_to_world"].to(device))
    grad_out = None
    if case.op == "patch_overlap":
        args = (*cams, case.grid, case.grid)
    elif case.op == "cell_similarity":
        args = (emb,)
        shape = (case.B, case.V, case.V, case.P, case.P)
        grad_out = torch.randn(shape, generator=g, dtype=DTYPE).to(device)
    elif case.op == "soft_infonce":
        args = (emb, overlap(case, cache_dir).to(device))
    else:  # patch_align
        args = (emb, *cams, case.grid, case.grid)
    return Inputs(args, emb, grad_out)
