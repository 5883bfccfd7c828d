"""What each optimizer step of a stage costs, measured on the trainer `hatch-vlm train` builds.

`StageProbe` is registered with `hatch_vlm.utils.probes.trainer_probe`; every hatch trainer made inside the
block is handed to it. It adds a callback and wraps three methods *of that instance* (nothing else changes):

* `get_batch_samples` (the data loader's next batches): seconds waiting for data, tokens per sample;
* `_generate` (GRPO): seconds generating and the completion tokens made;
* per optimizer step (callback): wall seconds from the previous step's end (data, forward, backward,
  optimizer), the optimizer's own seconds, and the step's peak memory (`memory`, reset after every step);
* after the first optimizer step: the model state read from the live tensors (`accounting.measured_state`)
  beside its exact prediction (`accounting.model_state`);
* on one extra step at the end (`profile_last`): torch.profiler's total time of `hatch::patch_align` and
  its backward, as a share of that step (PaStA's op share; the profiled step is not in the step times);
* `long_step_s`: when the warm-up steps took longer than that each (a GRPO round or a full fine-tuning step
  of a real model on a CPU: minutes), one measured step follows instead of the planned ones. A step that
  long is not the first-touch noise the warm-up guards against; a second one would only double the wait.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

from . import memory
from .accounting import measured_state, model_state

OP_PREFIX = "hatch::"         # torch.ops.hatch.*: the PaStA loss (patch_align, or its parts) and backward


@dataclass
class StepRecord:
    step: int
    seconds: float
    optimizer_seconds: float
    data_seconds: float
    generate_seconds: float
    generated_tokens: int
    peak_bytes: int
    samples: int
    op_seconds: float | None = None      # profiled step only


@dataclass
class StageProbe:
    device: str = "cpu"
    profile_last: bool = False           # profile the last step (the PaStA op's share)
    warmup: int = 0                      # untimed first steps (the runner's --warmup)
    long_step_s: float | None = None     # warm-up steps longer than this: one measured step, then stop
    cut_short: bool = False              # set after the warm-up when `long_step_s` applied
    steps: list[StepRecord] = field(default_factory=list)
    predicted: dict | None = None
    measured: dict | None = None
    visual_tokens: list[float] = field(default_factory=list)   # per sample
    text_tokens: list[float] = field(default_factory=list)
    baseline_rss: int = 0                # resident set when training began (libraries, data, model)
    load_peak: int = 0                   # the peak before training began (loading the model and data)

    def __call__(self, trainer) -> None:
        self.trainer = trainer
        self._window = {"data": 0.0, "generate": 0.0, "generated": 0, "samples": 0, "opt": 0.0}
        self._window_start = time.perf_counter()
        trainer.add_callback(_Callback(self))
        self._wrap(trainer, "get_batch_samples", self._after_batches, "data")
        if hasattr(trainer, "_generate"):
            self._wrap(trainer, "_generate", self._after_generate, "generate")

    # ------------------------------------------------------------------ wrappers
    def _wrap(self, trainer, name: str, after, kind: str) -> None:
        original = getattr(trainer, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = original(*args, **kwargs)
            self._window[kind] += time.perf_counter() - start
            after(out)
            return out

        setattr(trainer, name, timed)

    def _after_batches(self, out) -> None:
        batches = out[0] if isinstance(out, tuple) else out
        for batch in batches or []:
            if isinstance(batch, Mapping):
                self._count_tokens(batch)
            elif isinstance(batch, list):         # GRPO: raw rows; tokens come from _generate
                self._window["samples"] += len(batch)

    def _after_generate(self, out) -> None:
        prompt_ids, completion_ids = out[0], out[1]
        self._window["generated"] += sum(len(c) for c in completion_ids)
        image = _image_token_id(self.trainer.model)
        for p, c in zip(prompt_ids, completion_ids):
            vis = sum(1 for t in p if t == image)
            self.visual_tokens.append(vis)
            self.text_tokens.append(len(p) - vis + len(c))

    def _count_tokens(self, batch: dict) -> None:
        ids = batch.get("input_ids")
        if ids is not None:
            mask = batch.get("attention_mask")
            image = _image_token_id(self.trainer.model)
            for k in range(ids.shape[0]):
                row = ids[k] if mask is None else ids[k][mask[k].bool()]
                vis = int((row == image).sum())
                self.visual_tokens.append(vis)
                self.text_tokens.append(int(row.numel()) - vis)
            self._window["samples"] += int(ids.shape[0])
            return
        vis = _visual_tokens(batch, self.trainer.model)          # PaStA: images only
        if vis is not None:
            n = _num_samples(batch)
            self.visual_tokens += [vis / n] * n
            self.text_tokens += [0.0] * n
            self._window["samples"] += n

    # ------------------------------------------------------------------ steps
    def _reset_window(self) -> None:
        self._window = {"data": 0.0, "generate": 0.0, "generated": 0, "samples": 0, "opt": 0.0}
        self._window_start = time.perf_counter()
        memory.reset_peak(self.device)

    def end_step(self, step: int, op_seconds: float | None = None) -> None:
        w = self._window
        self.steps.append(StepRecord(step=step, seconds=time.perf_counter() - self._window_start,
                                     optimizer_seconds=w["opt"], data_seconds=w["data"],
                                     generate_seconds=w["generate"], generated_tokens=w["generated"],
                                     peak_bytes=memory.peak_bytes(self.device), samples=w["samples"],
                                     op_seconds=op_seconds))
        self._reset_window()

    def last_step(self, planned: int) -> int:
        """The global step training ends at: `planned`, or one measured step (+ the profiled one) after the
        warm-up when the warm-up steps were long (`long_step_s`; decided once, when the warm-up ends)."""
        if (not self.cut_short and self.long_step_s is not None and self.warmup >= 1
                and len(self.steps) == self.warmup
                and min(s.seconds for s in self.steps) > self.long_step_s):
            self.cut_short = True
        if not self.cut_short:
            return planned
        return min(planned, self.warmup + 1 + (1 if self.profile_last else 0))


def _image_token_id(model) -> int | None:
    from hatch_vlm.models.adapters.base import unwrap_model

    cfg = unwrap_model(model).config
    return getattr(cfg, "image_token_id", None) or getattr(cfg, "image_token_index", None)


def _visual_tokens(batch: dict, model) -> float | None:
    """Merged visual tokens in a PaStA batch (Qwen: grid / merge²; InternVL: tiles × tokens per tile)."""
    from hatch_vlm.models.adapters.base import unwrap_model

    cfg = unwrap_model(model).config
    grid = batch.get("image_grid_thw")
    if grid is not None:
        merge = int(getattr(cfg.vision_config, "spatial_merge_size", 2))
        return float(grid.prod(-1).sum()) / merge ** 2
    pixels = batch.get("pixel_values")
    seq = getattr(cfg, "image_seq_length", None)
    if pixels is not None and seq:
        return float(pixels.shape[0] * seq)
    return None


def _num_samples(batch: dict) -> int:
    depth = batch.get("depth")
    if isinstance(depth, torch.Tensor) and depth.dim() >= 3:
        return int(depth.shape[0])
    views = batch.get("num_views")
    if isinstance(views, torch.Tensor):
        return int(views.numel())
    return 1


class _Callback(TrainerCallback):
    def __init__(self, probe: StageProbe):
        self.probe = probe
        self._opt_start = 0.0
        self._profiler = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _make_resident(model)
        self.probe.predicted = model_state(model).to_dict()
        self.probe.baseline_rss = memory.rss_bytes()
        self.probe.load_peak = memory.peak_bytes(self.probe.device)
        self.probe._reset_window()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._opt_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.probe._window["opt"] += time.perf_counter() - self._opt_start
        if self.probe.measured is None:
            self.probe.measured = measured_state(model, optimizer)

    def on_step_end(self, args, state, control, **kwargs):
        op = None
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            op = _op_seconds(self._profiler)
            self._profiler = None
        self.probe.end_step(state.global_step, op)
        last = self.probe.last_step(state.max_steps)
        if state.global_step >= last:
            control.should_training_stop = True
        elif self.probe.profile_last and state.global_step == last - 1:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.__enter__()
        return control


def _make_resident(model) -> None:
    """Every CPU parameter and buffer copied into the process's own memory. `from_pretrained` maps the
    safetensors file: a weight that is never read (PaStA's frozen LLM) would never be resident and the peak
    would leave it out, where a GPU holds every weight it was given. The Parameter objects stay the same (the
    optimizer keeps them), only their storage moves."""
    from .accounting import unique_parameters

    with torch.no_grad():
        for p in unique_parameters(model):
            if p.device.type == "cpu":
                p.data = p.data.clone()
        for b in model.buffers():
            if b.device.type == "cpu":
                b.data = b.data.clone()


def _op_seconds(prof) -> float:
    """Total seconds of the PaStA op and its backward in a profile (CUDA: device time where recorded)."""
    total = 0.0
    for e in prof.key_averages():
        if e.key.startswith(OP_PREFIX):
            dev = getattr(e, "device_time_total", 0) or 0
            total += (dev if dev > 0 else e.cpu_time_total) / 1e6
    return total
