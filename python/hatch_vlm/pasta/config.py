"""Options of the PaStA stage (`PastaConfig`), shared by the stage, its loss and the SFT / GRPO auxiliary term."""
from __future__ import annotations

from dataclasses import dataclass, field

from hatch_vlm.utils.config import check
from hatch_ext.ops import ABS_TOL, GRID, MIN_OVERLAP, REL_TOL, STRIDE, TAU_P, TAU_T


@dataclass
class PastaConfig:
    """Options of the PaStA stage (defaults: ours; the paper gives no hyper-parameters)."""

    model_dir: str                       # a saved Qwen2.5-VL directory (tiny or real)
    output_dir: str
    # data: "auto" (hatch_vlm.data.synthetic when available, else toy rooms), "synthetic" or "toy_room";
    # run_pasta_stage also accepts explicit train/eval sample lists.
    data: str = "auto"
    num_train: int = 256
    num_eval: int = 32
    views: int = 2
    image_size: int = 112
    train_seed: int = 0
    eval_seed: int = 12345               # held-out scenes: a seed never used for training
    # question families of hatch_vlm.data.synthetic to draw layouts from (None: the "near" ones, whose views
    # overlap; the rotation / around / among layouts share little or nothing between views)
    synthetic_tasks: tuple[str, ...] | None = None
    # loss (docs/design.md)
    grid: int = GRID
    tau_t: float = TAU_T
    tau_p: float = TAU_P
    abs_tol: float = ABS_TOL
    rel_tol: float = REL_TOL
    stride: int = STRIDE
    min_overlap: float = MIN_OVERLAP
    # what trains
    tune: str = "full"                   # "full" | "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str | None = None          # peft target_modules (None: the family's, models.adapters)
    # optimisation
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    lr_scheduler_type: str = "cosine"
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_steps: int = 300
    max_seconds: float | None = None     # stop training after this much wall-clock (None: no limit)
    max_grad_norm: float = 1.0
    bf16: str | bool = "auto"            # "auto": bf16 autocast iff a bf16-capable GPU is used
    device: str | None = None            # None: CUDA when available, else CPU
    num_workers: int = 0                 # DataLoader workers (decoding real frames overlaps training)
    min_pixels: int | None = None        # image-token budget (None: the checkpoint's own bounds)
    max_pixels: int | None = None
    # bookkeeping
    logging_steps: int = 10
    save_steps: int = 0                  # Trainer checkpoints every N steps (0: only the final model)
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None   # a checkpoint-N directory of an earlier run (or None)
    eval_batch_size: int = 8
    # Compare every LLM weight before/after (a full copy of the LLM in memory). None: only for models
    # whose LLM has < 50M parameters (the tiny one); the frozen weights are not in the optimizer anyway.
    check_llm_unchanged: bool | None = None
    evaluate_before: bool = True
    plot: bool = True
    seed: int = 0
    extra_training_args: dict = field(default_factory=dict)

    def __post_init__(self):
        """Checked when made, like every section of a config: ConfigError("name: what is wrong")."""
        check(self.tune in ("full", "lora"), "tune", f"must be 'full' or 'lora', got {self.tune!r}")
        check(self.data in ("auto", "synthetic", "toy_room"), "data",
              f"must be 'auto', 'synthetic' or 'toy_room', got {self.data!r}")
        for name in ("num_train", "num_eval", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_steps", "grid", "stride"):
            least = 0 if name in ("num_train", "num_eval") else 1
            check(getattr(self, name) >= least, name, f"must be positive, got {getattr(self, name)}")
        check(self.views >= 2, "views", f"must be >= 2 (PaStA aligns across views), got {self.views}")
        for name in ("learning_rate", "tau_t", "tau_p"):
            check(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        for name in ("abs_tol", "rel_tol", "min_overlap", "weight_decay"):
            check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        check(self.max_seconds is None or self.max_seconds > 0, "max_seconds",
              f"must be > 0 or None, got {self.max_seconds}")
        check(self.bf16 in ("auto", True, False), "bf16", f"must be 'auto', True or False, got {self.bf16!r}")
