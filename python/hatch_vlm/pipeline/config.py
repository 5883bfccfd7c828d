"""The configuration of a HATCH run (`hatch-vlm train --config FILE`), checked completely at load time.

    model: tiny                 # "tiny" (built offline) or a local Qwen2.5-VL directory, or a section:
    # model: {path: /models/Qwen2.5-VL-3B-Instruct, max_pixels: 200704, min_pixels: 3136}
    output_dir: runs/hatch
    stages: [pasta, qa_sft, actor_sft, grpo, eval]
    data: {kind: synthetic, num_train: 64, num_eval: 16, views: 2, size: 112}
    # data: {kind: spar, path: /data/spar, tasks: [multi_view], num_train: 10000, num_eval: 256}
    pasta: {max_steps: 60, learning_rate: 1.0e-3}          # hatch_vlm.pasta.stage.PastaConfig fields
    qa_sft: {max_steps: 40}                                # hatch_vlm.actor.sft.SFTOptions fields
    actor_sft: {max_steps: 80}                             # hatch_vlm.actor.sft.SFTOptions fields
    grpo: {max_steps: 30, num_generations: 4}              # hatch_vlm.actor.grpo.GRPOOptions fields
    eval: {synthetic: true, benchmarks: [{name: spar-mv, path: /data/spar_bench}]}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hatch_vlm.utils.config import ConfigError, check, from_dict, load_mapping

STAGES = ("pasta", "qa_sft", "actor_sft", "grpo", "eval")
# Filled in by the runner (or taken from the `data` section), never by a stage's own section.
_RUNNER_FIELDS = {"model_dir", "output_dir", "data", "num_train", "num_eval", "views", "image_size",
                  "train_seed", "eval_seed", "resume_from_checkpoint", "min_pixels", "max_pixels",
                  "num_workers"}


@dataclass
class ModelSection:
    """The base model and the image-token budget every stage and the evaluation use.

    Qwen2.5-VL resizes each image so that min_pixels <= H*W <= max_pixels (multiples of 28 px, 28*28 px per
    visual token): a 1296x968 ScanNet frame costs ~1.6k tokens at the checkpoint's default bound, 128 at
    max_pixels = 128*28*28 = 100352. None keeps the checkpoint's own setting."""
    path: str = "tiny"                # "tiny" (built offline) or a local from_pretrained directory
    min_pixels: int | None = None
    max_pixels: int | None = None

    def __post_init__(self):
        if self.path != "tiny":
            check(Path(self.path).is_dir(), "model.path",
                  f"{self.path!r} is neither 'tiny' nor a local model directory")
        for name in ("min_pixels", "max_pixels"):
            v = getattr(self, name)
            check(v is None or v >= 28 * 28, f"model.{name}", f"must be >= 784 (one 28x28 token), got {v}")
        if self.min_pixels is not None and self.max_pixels is not None:
            check(self.min_pixels <= self.max_pixels, "model.min_pixels",
                  f"must be <= model.max_pixels, got {self.min_pixels} > {self.max_pixels}")

    @property
    def pixels(self) -> dict:
        """The budget as keyword arguments of `load_model_and_processor` / `load_processor`."""
        return {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}


@dataclass
class DataSection:
    """Training and held-out data. kind: synthetic (generated) or spar (a SPAR-7M-RGBD download)."""
    kind: Literal["synthetic", "spar"] = "synthetic"
    path: str | None = None           # spar: the spar/ directory of the download, or one spar/<source>/
    split: str | None = "train"       # spar: the qa_jsonl split (None: every split)
    tasks: list[str] | None = None    # spar: task names and/or groups (multi_view, single_view, video)
    num_train: int = 64               # training samples (spar: chosen from the tree, see hatch_vlm.data.spar7m.index)
    num_eval: int = 16                # held-out samples (disjoint from training, stable across num_train)
    min_views: int = 2                # spar: skip records with fewer images (PaStA and ActoR need pairs)
    answer_types: list[Literal["mc", "numeric", "open"]] | None = None   # spar: keep these (ActoR: mc, numeric)
    depth_scale: float | dict[str, float] | None = None   # spar: metres per depth unit ({source: m}; mm)
    num_workers: int | None = None    # DataLoader workers decoding frames (None: 0 synthetic, 2 spar)
    index_cache: str | None = "default"   # spar: line-offset cache dir ("default": ~/.cache/hatch_vlm; null: none)
    strict: bool = False              # spar: stop at the first bad record instead of skipping and counting it
    views: int = 2                    # synthetic: cameras per sample
    size: int = 112                   # synthetic: image side
    seed: int = 0
    actor_fraction: float = 0.1       # the ActoR cold start uses this share of the training data

    def __post_init__(self):
        check(self.num_train >= 1, "data.num_train", f"must be >= 1, got {self.num_train}")
        check(self.num_eval >= 1, "data.num_eval", f"must be >= 1, got {self.num_eval}")
        check(2 <= self.views <= 4, "data.views", f"must be 2, 3 or 4, got {self.views}")
        check(self.size >= 56, "data.size", f"must be >= 56 pixels, got {self.size}")
        check(self.min_views >= 1, "data.min_views", f"must be >= 1, got {self.min_views}")
        check(self.num_workers is None or self.num_workers >= 0, "data.num_workers",
              f"must be >= 0, got {self.num_workers}")
        check(0 < self.actor_fraction <= 1, "data.actor_fraction",
              f"must be in (0, 1], got {self.actor_fraction}")
        scales = self.depth_scale.values() if isinstance(self.depth_scale, dict) else [self.depth_scale]
        check(all(v is None or v > 0 for v in scales), "data.depth_scale", f"must be > 0, got {self.depth_scale}")
        if self.kind == "spar":
            check(self.path is not None, "data.path", "is required when data.kind is 'spar'")
            check(Path(self.path).is_dir(), "data.path", f"no such directory: {self.path}")
            from hatch_vlm.data.common import DataError
            from hatch_vlm.data.spar7m.layout import find_sources

            try:
                find_sources(self.path)
            except DataError as e:
                check(False, "data.path", str(e))
        elif self.tasks is not None:
            check(False, "data.tasks", "selects SPAR-7M tasks: only with data.kind 'spar'")

    @property
    def workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return 2 if self.kind == "spar" else 0


@dataclass
class BenchmarkSpec:
    name: str                         # a hatch_vlm.eval.benchmarks name (spar-mv, mindcube, mmsi, synthetic)
    path: str
    image_root: str | None = None     # where the benchmark's image paths start (default: its own rule)

    def __post_init__(self):
        from hatch_vlm.eval.benchmarks import NAMES

        check(self.name in NAMES, f"eval.benchmarks[{self.name}].name", f"must be one of {list(NAMES)}")
        check(Path(self.path).exists(), f"eval.benchmarks[{self.name}].path", f"not found: {self.path}")
        check(self.image_root is None or Path(self.image_root).is_dir(), f"eval.benchmarks[{self.name}].image_root",
              f"no such directory: {self.image_root}")


@dataclass
class EvalSection:
    synthetic: bool = True            # evaluate on the held-out samples of `data`
    benchmarks: list[BenchmarkSpec] = field(default_factory=list)
    actor: bool = True                # ActoR prompt (actions, then the answer)
    max_new_tokens: int = 160
    batch_size: int = 8
    limit: int | None = None          # at most this many questions per benchmark

    def __post_init__(self):
        check(self.max_new_tokens >= 1, "eval.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.limit is None or self.limit >= 1, "eval.limit", f"must be >= 1, got {self.limit}")


@dataclass
class HatchConfig:
    model: str | ModelSection = "tiny"     # a path / "tiny", or a ModelSection mapping
    output_dir: str = "runs/hatch"
    seed: int = 0
    threads: int | None = None        # torch CPU threads (None: torch's default)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    data: DataSection = field(default_factory=DataSection)
    pasta: dict[str, Any] = field(default_factory=dict)
    qa_sft: dict[str, Any] = field(default_factory=dict)
    actor_sft: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self):
        unknown = [s for s in self.stages if s not in STAGES]
        check(not unknown, "stages", f"unknown stage(s) {unknown} (known: {list(STAGES)})")
        check(len(set(self.stages)) == len(self.stages), "stages", f"a stage is listed twice: {self.stages}")
        order = [STAGES.index(s) for s in self.stages]
        check(order == sorted(order), "stages", f"must follow the recipe's order {list(STAGES)}")
        check(bool(self.stages), "stages", "is empty: name at least one stage")
        check(self.threads is None or self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        if isinstance(self.model, str):
            try:
                self.model = ModelSection(path=self.model)
            except ConfigError as e:
                raise ConfigError(str(e).replace("model.path", "model", 1)) from None
        # Each stage's settings are checked now against the stage's own options class, so that a typo
        # fails before hours of earlier stages have run.
        for name in ("pasta", "qa_sft", "actor_sft", "grpo"):
            stage_options(name, getattr(self, name))


def _options_class(name: str):
    if name == "pasta":
        from hatch_vlm.pasta.stage import PastaConfig

        return PastaConfig
    if name in ("qa_sft", "actor_sft"):
        from hatch_vlm.actor.sft import SFTOptions

        return SFTOptions
    from hatch_vlm.actor.grpo import GRPOOptions

    return GRPOOptions


def stage_options(name: str, values: dict[str, Any], **runner: Any):
    """The options object of stage `name` from the config section `values` (+ runner-set fields)."""
    cls = _options_class(name)
    user_fields = {f.name for f in dataclasses.fields(cls)} - _RUNNER_FIELDS
    unknown = sorted(set(values) - user_fields)
    if unknown:
        raise ConfigError(f"{name}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(user_fields))})")
    no_default = {f.name for f in dataclasses.fields(cls)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    filled = {k: "<set by the runner>" for k in no_default & _RUNNER_FIELDS}
    filled.update({k: v for k, v in runner.items() if k in _RUNNER_FIELDS})
    try:
        opts = from_dict(cls, {**values, **filled}, where=name)
        validate = getattr(opts, "validate", None)
        if callable(validate):
            validate()
        return opts
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{name}: {e}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> HatchConfig:
    data = load_mapping(path)
    if overrides:
        data = {**data, **overrides}
    return from_dict(HatchConfig, data, where="config")
