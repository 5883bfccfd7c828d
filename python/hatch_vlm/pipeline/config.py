"""The configuration of a HATCH run (`hatch-vlm train --config FILE`), checked completely at load time.

    model: tiny                 # "tiny" (built offline) or a local model directory, or a section:
    # model: {path: /models/Qwen2.5-VL-3B-Instruct, max_pixels: 200704, min_pixels: 3136}
    # model: {path: tiny, family: qwen3-vl}     # the tiny model of another family (qwen2.5-vl, qwen3-vl, internvl3)
    output_dir: runs/hatch
    stages: [pasta, qa_sft, actor_sft, grpo, eval]
    data: {kind: synthetic, num_train: 64, num_eval: 16, views: 2, size: 112}
    # data: {kind: spar, path: /data/spar, tasks: [multi_view], num_train: 10000, num_eval: 256}
    pasta: {max_steps: 60, learning_rate: 1.0e-3, per_device_train_batch_size: 8}    # PastaSection
    qa_sft: {max_steps: 40, gradient_accumulation_steps: 2}    # SFTOptions: `lora` + any trl.SFTConfig field
    actor_sft: {max_steps: 80}                                 # SFTOptions
    # actor_sft: {freeze: [embeddings]}      # full fine-tuning leaving parts fixed: vision, embeddings
    grpo: {max_steps: 30, num_generations: 4, pasta_weight: 0.1}   # GRPOOptions: ours + any trl.GRPOConfig field
    eval: {synthetic: true, benchmarks: [{name: spar-mv, path: /data/spar_bench}]}

Every section is a typed dataclass, parsed and checked once, here; the runner uses the objects as they are.
One name per concept, TRL's: `per_device_train_batch_size` and `gradient_accumulation_steps` in every stage
(the PaStA stage too); the names of earlier versions (`batch_size`, `grad_accum`, `extra`, `aux_weight`)
are refused with a message naming their replacement.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hatch_vlm.actor.grpo import GRPOOptions
from hatch_vlm.actor.sft import SFTOptions
from hatch_vlm.pasta.config import PastaConfig
from hatch_vlm.utils.config import ConfigError, check, from_dict, load_mapping

STAGES = ("pasta", "qa_sft", "actor_sft", "grpo", "eval")


@dataclass
class ModelSection:
    """The base model and the image-token budget every stage and the evaluation use.

    Qwen2.5-VL resizes each image so that min_pixels <= H*W <= max_pixels (multiples of 28 px, 28*28 px per
    visual token): a 1296x968 ScanNet frame costs ~1.6k tokens at the checkpoint's default bound, 128 at
    max_pixels = 128*28*28 = 100352 (Qwen3-VL: 32*32 px per token; InternVL: the bounds cap the tiled
    canvas, 448*448 px per tile). None keeps the checkpoint's own setting.

    `family` (docs/adapters.md): with `path: tiny`, which tiny model is built ("qwen2.5-vl", the default and
    the paper's base; "qwen3-vl"; "internvl3"); with a directory, the family is read from its config.json
    (`model_type`, at load time) and `family`, when given, must agree with it."""
    path: str = "tiny"                # "tiny" (built offline) or a local from_pretrained directory
    min_pixels: int | None = None
    max_pixels: int | None = None
    family: str | None = None         # a hatch_vlm.models.adapters family (None: tiny -> qwen2.5-vl)

    def __post_init__(self):
        from hatch_vlm.models.adapters import adapter_for_dir, adapter_for_family

        if self.family is not None:
            try:
                self.family = adapter_for_family(self.family).family
            except ValueError as e:
                check(False, "model.family", str(e))
        if self.path != "tiny":
            check(Path(self.path).is_dir(), "model.path",
                  f"{self.path!r} is neither 'tiny' nor a local model directory")
            if self.family is not None and (Path(self.path) / "config.json").is_file():
                try:
                    found = adapter_for_dir(self.path).family
                except ValueError as e:
                    check(False, "model.path", str(e))
                check(self.family == found, "model.family",
                      f"is {self.family!r} but {self.path} holds a {found} model (its config.json model_type)")
        for name in ("min_pixels", "max_pixels"):
            v = getattr(self, name)
            check(v is None or v >= 28 * 28, f"model.{name}", f"must be >= 784 (one 28x28 token), got {v}")
        if self.min_pixels is not None and self.max_pixels is not None:
            check(self.min_pixels <= self.max_pixels, "model.min_pixels",
                  f"must be <= model.max_pixels, got {self.min_pixels} > {self.max_pixels}")

    @property
    def tiny_family(self) -> str:
        """The family of the tiny model `path: tiny` builds (`build_tiny_model(..., family=...)`)."""
        return self.family or "qwen2.5-vl"

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
    # spar: line-offset cache dir ("default": $HATCH_CACHE_DIR/spar7m_index, else ~/.cache/hatch/spar7m_index;
    # null: none). Node-local state: on a multi-node job each node builds its own unless the directory is shared
    index_cache: str | None = "default"
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


# PastaConfig fields the runner fills in (from the data section, the model section, the run directory),
# never a stage section. synthetic_tasks only picks the stage's own scenes, and the runner always gives it
# the run's data.
_PASTA_RUNNER_FIELDS = {"model_dir", "output_dir", "data", "num_train", "num_eval", "views", "image_size",
                        "train_seed", "eval_seed", "resume_from_checkpoint", "min_pixels", "max_pixels",
                        "num_workers", "synthetic_tasks"}
# Names earlier versions of the pasta section used -> the one name (TRL's, as in the SFT and GRPO sections,
# and PastaConfig's own).
_PASTA_OLD_NAMES = {"batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps"}


def _pasta_post_init(self) -> None:
    self.to_pasta_config(model_dir="", output_dir="")       # PastaConfig checks itself when made


def _to_pasta_config(self, **runner) -> PastaConfig:
    """The PastaConfig of this section plus the fields the runner fills in."""
    return PastaConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, **runner)


def _pasta_section_class():
    """The pasta section: PastaConfig's fields (the PaStA stage owns them; built from it so that the two never
    drift apart) less the runner's, under the same names."""
    hints = typing.get_type_hints(PastaConfig)
    specs = []
    for f in dataclasses.fields(PastaConfig):
        if f.name in _PASTA_RUNNER_FIELDS or not f.init:
            continue
        default = (field(default=f.default) if f.default is not dataclasses.MISSING
                   else field(default_factory=f.default_factory))
        specs.append((f.name, hints[f.name], default))
    renamed = {old: f"renamed to {new} (the name the SFT and GRPO sections use)"
               for old, new in _PASTA_OLD_NAMES.items()}
    return dataclasses.make_dataclass(
        "PastaSection", specs, namespace={
            "__post_init__": _pasta_post_init, "to_pasta_config": _to_pasta_config,
            "RENAMED": {**renamed, "extra": "removed: use extra_training_args"},
            "__doc__": "The pasta section: hatch_vlm.pasta.config.PastaConfig's options."})


PastaSection = _pasta_section_class()
PastaSection.__module__ = __name__


@dataclass
class HatchConfig:
    model: str | ModelSection = "tiny"     # a path / "tiny", or a ModelSection mapping
    output_dir: str = "runs/hatch"
    seed: int = 0
    threads: int | None = None        # torch CPU threads (None: torch's default)
    # seconds a collective waits for a rank that went silent before the job ends naming it (None: 90 on
    # CPUs, 1800 on GPUs; utils/distributed.py)
    dist_timeout_s: int | None = None
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    data: DataSection = field(default_factory=DataSection)
    pasta: PastaSection = field(default_factory=PastaSection)
    qa_sft: SFTOptions = field(default_factory=SFTOptions)
    actor_sft: SFTOptions = field(default_factory=SFTOptions)
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self):
        unknown = [s for s in self.stages if s not in STAGES]
        check(not unknown, "stages", f"unknown stage(s) {unknown} (known: {list(STAGES)})")
        check(len(set(self.stages)) == len(self.stages), "stages", f"a stage is listed twice: {self.stages}")
        order = [STAGES.index(s) for s in self.stages]
        check(order == sorted(order), "stages", f"must follow the recipe's order {list(STAGES)}")
        check(bool(self.stages), "stages", "is empty: name at least one stage")
        check(self.threads is None or self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        check(self.dist_timeout_s is None or self.dist_timeout_s >= 10, "dist_timeout_s",
              f"must be >= 10 seconds, got {self.dist_timeout_s}")
        if isinstance(self.model, str):
            try:
                self.model = ModelSection(path=self.model)
            except ConfigError as e:
                raise ConfigError(str(e).replace("model.path", "model", 1)) from None
        # From Python, a section may be given as a mapping, as in a YAML file: parsed and checked the same way.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                section = ModelSection if f.name == "model" else type(f.default_factory())
                setattr(self, f.name, from_dict(section, value, where=f"config.{f.name}"))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> HatchConfig:
    data = load_mapping(path)
    if overrides:
        data = {**data, **overrides}
    return from_dict(HatchConfig, data, where="config")
