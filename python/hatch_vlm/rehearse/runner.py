"""`hatch-vlm rehearse --config FILE`: each stage of a config for a few optimizer steps at the real model's
size, measured; extrapolated where this machine is too small; planned onto GPUs.

Per stage (docs/rehearse.md):
1. The exact model state of the full-size stage, on a meta-device model prepared by the stage's own code
   (`stages.stage_state`): no memory spent.
2. Variants at full width run in their own processes (`worker`), each under a watchdog that ends it before
   it passes the memory budget: two reduced depths (2 and 4 decoder layers, the vision tower cut in the same
   proportion) at the config's micro-batch; when that is over the budget, two smaller micro-batches at each
   depth. Every variant is predicted before it runs (model state exact + the measured rest scaled) and is
   skipped when the prediction is over the budget.
3. The full model itself when the fit predicts that it fits: a measured number, and a check of the fit.
4. Fits (`fit`) give the full depth and the config's micro-batch; each number says measured or extrapolated.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from functools import cached_property
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hatch_vlm.utils.config import ConfigError

from . import memory
from .architecture import (Depth, depth_fraction, depth_of, has_weights, materialise, min_text_layers,
                           min_vision_blocks, read_config, shrink)
from .stages import (generation_batch, micro_batch, stage_section, stage_state, tied_gradient_transient,
                     uses_lora)
from .summary import steady_state

GIB = memory.GIB
SMALL_DEPTHS = (2, 4)          # decoder layers of the two reduced variants


@dataclass
class RehearseOptions:
    config: str
    out: str = "runs/rehearse"
    model: str | None = None          # instead of the config's model.path (e.g. configs/models/<name>)
    steps: int = 2                    # measured optimizer steps per variant (after the warm-up)
    warmup: int = 1                   # steps not timed (first touch of fresh memory is slower)
    stages: list[str] | None = None   # default: the config's
    budget_gib: float | None = None   # default: this machine's available memory less 4 GiB
    full: bool = True                 # also run the full model where it is predicted to fit
    views: int = 3                    # views per sample of the stand-in data (SPAR-Bench has 1-3)
    num_samples: int = 24             # stand-in samples
    name: str | None = None           # report name (default: the model directory's name)
    gpus: int = 8
    gpu_mem_gib: float = 80.0
    engine: str = "ddp"
    keep_models: bool = True          # keep the materialised random-weight variants for the next rehearsal
    max_variant_minutes: float = 15.0  # a full-size variant predicted to take longer is not run (extrapolated)
    long_step_s: float | None = 60.0  # warm-up steps longer than this: one measured step (probe.StageProbe)
    wait_minutes: float = 10.0        # how long a variant waits for memory other processes hold

    def __post_init__(self):
        from .accounting import ENGINES

        if self.steps < 1:
            raise ConfigError(f"--steps: must be >= 1, got {self.steps}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup: must be >= 0, got {self.warmup}")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine: must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.long_step_s is not None and self.long_step_s <= 0:
            self.long_step_s = None
        if self.gpus < 1 or self.gpu_mem_gib <= 0:
            raise ConfigError(f"--gpus / --gpu-mem: must be positive, got {self.gpus} / {self.gpu_mem_gib}")


@dataclass
class Variant:
    depth: Depth
    micro_batch: int
    x: float                          # depth fraction (fit.py)
    result: dict | None = None
    over_budget: bool = False
    skipped: str | None = None        # why it was not run
    state_total: int = 0              # exact model-state bytes of the stage at this depth (stages.stage_state)

    @property
    def label(self) -> str:
        return f"{self.depth.text}L/{self.depth.vision}V b{self.micro_batch}"


@dataclass
class StageRehearsal:
    stage: str
    variants: list[Variant] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- config
def rehearsal_config(opts: RehearseOptions, out: Path, say) -> tuple[dict, list[str]]:
    """The user's config as a mapping, with what this machine lacks replaced (each replacement noted):
    a SPAR download that is not here -> a stand-in tree at real frame sizes; benchmarks not here -> left out."""
    from hatch_vlm.utils.config import load_mapping

    raw = load_mapping(opts.config)
    notes: list[str] = []
    if opts.model is not None:
        section = raw.get("model", "tiny")
        raw["model"] = {**(section if isinstance(section, dict) else {}), "path": opts.model}
        raw["model"].pop("family", None)
    model = raw.get("model", "tiny")
    path = model if isinstance(model, str) else (model or {}).get("path", "tiny")
    if path != "tiny" and not (Path(path) / "config.json").is_file():
        raise ConfigError(f"model.path: {path} has no config.json (rehearse needs a checkpoint or an "
                          "architecture-only directory, e.g. configs/models/Qwen2.5-VL-3B-Instruct)")
    data = dict(raw.get("data") or {})
    if data.get("kind") == "spar" and not Path(str(data.get("path"))).is_dir():
        from .standin import write_stand_in

        root = out / "data"
        say(f"data: {data.get('path')} is not here: a stand-in SPAR-7M tree at ScanNet frame sizes "
            f"({opts.num_samples} samples x {opts.views} views) in {root}")
        write_stand_in(root, opts.num_samples, opts.views)
        notes.append(f"data.path {data.get('path')} not on this machine: stand-in tree of {opts.num_samples} "
                     f"synthetic samples x {opts.views} views at 1296x968 colour / 640x480 depth "
                     "(hatch_vlm.rehearse.standin)")
        data.update(path=str(root), index_cache=None)
    data["num_train"] = min(int(data.get("num_train", 64)), max(opts.num_samples - 2, 2))
    data["num_eval"] = 2
    raw["data"] = data
    ev = dict(raw.get("eval") or {})
    missing = [b for b in ev.get("benchmarks", []) if not Path(str(b.get("path"))).exists()]
    if missing:
        notes.append("eval benchmarks not on this machine, left out (the eval stage is measured on held-out "
                     f"samples at the same generation settings): {', '.join(b['name'] for b in missing)}")
        ev["benchmarks"] = [b for b in ev.get("benchmarks", []) if b not in missing]
    ev["synthetic"] = True
    raw["eval"] = ev
    return raw, notes


def variant_config(raw: dict, stage: str, model_dir: Path, work: Path, b: int, n_micro: int, steps: int,
                   freeze: list[str] | None = None) -> dict:
    """The config a variant's worker runs: the stage alone, `steps` optimizer steps of `n_micro` micro-batches
    of `b`, no checkpoints, no plots, no evaluation before training; `freeze`: the stage's parts held fixed
    instead of the config's (the proxy of `Rehearsal.proxy_freeze`)."""
    cfg = json.loads(json.dumps(raw))
    model = cfg.get("model", "tiny")
    cfg["model"] = {**(model if isinstance(model, dict) else {"path": model}), "path": str(model_dir)}
    cfg["model"].pop("family", None)
    cfg["output_dir"] = str(work)
    cfg["stages"] = [stage]
    if stage == "pasta":
        p = dict(cfg.get("pasta") or {})
        p.update(max_steps=steps, per_device_train_batch_size=b, gradient_accumulation_steps=n_micro,
                 save_steps=0, logging_steps=1, evaluate_before=False, plot=False, check_llm_unchanged=False,
                 max_seconds=None, warmup_steps=0)
        cfg["pasta"] = p
    elif stage in ("qa_sft", "actor_sft", "grpo"):
        s = dict(cfg.get(stage) or {})
        s.pop("save_steps", None)
        s.update(max_steps=steps, per_device_train_batch_size=b, gradient_accumulation_steps=n_micro,
                 logging_steps=1)
        if freeze is not None:
            s["freeze"] = list(freeze)
        if stage == "grpo":
            s.update(steps_per_generation=n_micro, plot=False)
        cfg[stage] = s
    else:
        cfg["eval"] = {**cfg.get("eval", {}), "limit": b, "batch_size": b}
    if stage == "actor_sft":
        # the cold start takes data.actor_fraction of the training rows: enough rows for the steps
        cfg["data"] = {**cfg["data"], "actor_fraction": 1.0}
    return cfg


# ---------------------------------------------------------------------------------------------- running
class Rehearsal:
    def __init__(self, opts: RehearseOptions, say=print):
        self.opts, self.say = opts, say
        self.out = Path(opts.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.raw, self.notes = rehearsal_config(opts, self.out, say)
        self.device = memory.rehearsal_device()      # where the variants run (worker spec "device")
        if self.device == "cpu":
            from .cpu_costs import NOTE

            self.notes.append(NOTE)
        from hatch_vlm.pipeline.config import HatchConfig
        from hatch_vlm.utils.config import from_dict

        self.cfg = from_dict(HatchConfig, json.loads(json.dumps(self.raw)), where="config")
        self.source = self._source_model()
        self.hf = read_config(self.source)
        self.full = depth_of(self.hf)
        self.real_weights = has_weights(self.source) and self.cfg.model.path != "tiny"
        self._states: dict = {}
        self.proxies: dict[str, list[str]] = {}     # stage -> parts frozen in its variants (proxy_freeze)
        self.budget = int((opts.budget_gib * GIB) if opts.budget_gib else memory.available_bytes(self.device) - 4 * GIB)
        if self.budget < GIB // 2:
            raise ConfigError(f"--budget: {self.budget / GIB:.1f} GiB is too little to rehearse anything")

    def _source_model(self) -> Path:
        if self.cfg.model.path != "tiny":
            return Path(self.cfg.model.path)
        from hatch_vlm.models.tiny import build_tiny_model

        path = self.out / "models" / f"tiny-{self.cfg.model.tiny_family}"
        if not (path / "config.json").is_file():
            build_tiny_model(path, seed=self.cfg.seed, family=self.cfg.model.tiny_family)
        return path

    # ------------------------------------------------------------------ models
    def model_path(self, depth: Depth) -> Path:
        """Where the variant's checkpoint is: the source itself at full depth when it has weights, else the
        random-weight model of that depth under OUT/models (built or not)."""
        if depth == self.full and has_weights(self.source):
            return self.source
        return self.out / "models" / f"{self.source.name}-{depth.text}L{depth.vision}V"

    def model_for(self, depth: Depth) -> Path:
        """A checkpoint directory of the variant (`model_path`), random weights materialised once there and
        kept for later rehearsals."""
        path = self.model_path(depth)
        if path == self.source:
            return path
        t = time.perf_counter()
        materialise(self.source, path, depth)
        if time.perf_counter() - t > 1:
            self.say(f"  built {path.name} (random weights) in {time.perf_counter() - t:.0f}s")
        return path

    def depths(self) -> list[Depth]:
        """Two reduced depths, the second twice the first (2 and 4 decoder layers; 3 and 6 for a model that
        needs 3, Qwen3-VL's deepstack), the vision tower cut in proportion."""
        low = max(SMALL_DEPTHS[0], min_text_layers(self.hf))
        out = []
        for t in (low, low * SMALL_DEPTHS[1] // SMALL_DEPTHS[0]):
            d = self.depth_between(t)
            if t < self.full.text and d not in out:
                out.append(d)
        return out

    def smallest(self) -> Depth:
        """The shallowest depth a variant of this model runs at (the full one when it cannot be cut)."""
        return (self.depths() or [self.full])[0]

    def depth_between(self, text_layers: int) -> Depth:
        """A reduced depth of `text_layers` decoder layers, the vision tower cut in proportion (as `depths`)."""
        v = max(min_vision_blocks(self.hf),
                min(self.full.vision, round(text_layers / self.full.text * self.full.vision)))
        return Depth(text_layers, v)

    def state_at(self, stage: str, depth: Depth, freeze: list[str] | None = None):
        """The stage's exact model state at `depth` (`freeze`: with those parts held fixed instead of the
        config's)."""
        key = (stage, depth, tuple(freeze) if freeze is not None else None)
        if key not in self._states:
            cfg = self.cfg
            if freeze is not None:
                from dataclasses import replace

                cfg = replace(cfg, **{stage: replace(stage_section(cfg, stage), freeze=list(freeze))})
            self._states[key] = stage_state(shrink(self.hf, depth) if depth != self.full else self.hf, cfg, stage)
        return self._states[key]

    def proxy_freeze(self, stage: str) -> list[str] | None:
        """Full fine-tuning whose model state alone exceeds the budget even at the smallest depth (the
        vocabulary-sized embedding and head of an 8B model carry ~19 GiB of training state at any depth): its
        variants run with the embeddings frozen, a proxy that keeps every activation (the logits and their
        gradient are still computed) and drops only those two matrices' gradients and optimizer state, which
        the model state (exact, for the config) adds back. None when the stage fits as configured."""
        if stage not in ("qa_sft", "actor_sft", "grpo") or uses_lora(self.cfg, stage):
            return None
        parts = list(stage_section(self.cfg, stage).freeze)
        if "embeddings" in parts or self.state_at(stage, self.smallest()).total <= self.budget:
            return None
        return [*parts, "embeddings"]

    @cached_property
    def tied_transient(self) -> int:
        """The tied embedding's second gradient, in bytes, that a frozen-embedding proxy does not hold
        (stages.tied_gradient_transient; built once, on a meta-device model)."""
        return tied_gradient_transient(self.hf)

    def fraction(self, depth: Depth, stage: str | None = None) -> float:
        """The `x` a variant's costs are fitted over (fit.py): the share of the repeated layers' parameters it
        keeps; for PaStA, the share of the vision blocks. PaStA trains the vision tower with the LLM frozen,
        so its activations grow with the vision blocks; where the ladder cannot cut both in proportion
        (Qwen3-VL-4B: 3L/3V and 6L/4V, the deepstack's floor of 3 blocks) the parameter share put a 1-block
        step over a 2x depth step, and the full 4B's PaStA peak came out 9.9 % under its measurement (15.7
        against 17.43 GiB); over the vision blocks it is 1.5 % under (Qwen3-VL-2B 0.6 %, Qwen2.5-VL-3B 1.0 %
        under, docs/rehearse.md)."""
        if depth == self.full:
            return 1.0
        if stage == "pasta":
            return depth.vision / self.full.vision
        return depth_fraction(self.hf, depth)

    # ------------------------------------------------------------------ one variant
    def disk_short(self, stage: str, v: Variant) -> str | None:
        """Why this variant cannot run for want of disk, or None: it may write its random-weight model (when
        not built yet) and the stage's trained model (PaStA and the SFT stages save a whole one), each at most
        the weights' bytes as held in training; a full disk would end the variant only when it saves."""
        build = 0 if has_weights(self.model_path(v.depth)) else 1
        saves = 1 if stage in ("pasta", "qa_sft", "actor_sft") else 0
        need = (build + saves) * self.state_at(stage, v.depth, self.proxies.get(stage)).weights + GIB
        free = shutil.disk_usage(self.out).free
        if need > free:
            return (f"needs ~{need / GIB:.1f} GiB of disk in {self.out} (its model and the stage's output), "
                    f"{free / GIB:.1f} GiB free")
        return None

    def run_variant(self, stage: str, v: Variant) -> Variant:
        short = self.disk_short(stage, v)
        if short is not None:
            v.skipped = short
            self.say(f"  [{stage}] {v.label}: skipped, {short}")
            return v
        steps = self.opts.warmup + self.opts.steps + (1 if stage == "pasta" else 0)
        n_micro = n_micro_per_step(self.cfg, stage, v.micro_batch)
        work = self.out / "work" / stage / v.label.replace("/", "-").replace(" ", "-")
        model_dir = self.model_for(v.depth)
        spec = {"config": variant_config(self.raw, stage, model_dir, work, v.micro_batch, n_micro, steps,
                                         self.proxies.get(stage)),
                "stage": stage, "model_dir": str(model_dir), "device": self.device,
                # the resident-set watchdog guards the host's memory; a GPU's is held to the budget by the
                # prediction, and a CUDA out-of-memory error ends only the variant's process
                "profile": stage == "pasta", "max_rss_gib": self.budget / GIB if self.device == "cpu" else None,
                "warmup": self.opts.warmup, "long_step_s": self.opts.long_step_s}
        result_path = work / "result.json"
        if _same_spec(work / "spec.json", spec) and result_path.is_file():
            # the same variant measured by an earlier rehearsal: cheap to rerun (delete OUT/work to measure again)
            v.result = json.loads(result_path.read_text())
            v.result["n_micro"] = n_micro
            v.result["reused"] = True
            self.say(f"  [{stage}] {v.label}: measured in an earlier run ({work}), reused")
            return v
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / "spec.json").write_text(json.dumps(spec, indent=1))
        log = self.out / "logs" / f"{stage}-{work.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(log, "w") as fh:
            proc = subprocess.run([sys.executable, "-m", "hatch_vlm.rehearse.worker", str(work / "spec.json"),
                                   str(result_path)], stdout=fh, stderr=subprocess.STDOUT,
                                  env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        seconds = time.perf_counter() - t
        from .worker import OVER_BUDGET

        if proc.returncode == OVER_BUDGET:
            v.over_budget = True
            self.say(f"  [{stage}] {v.label}: over the {self.budget / GIB:.1f} GiB budget, stopped ({seconds:.0f}s)")
        elif proc.returncode == -9:
            # SIGKILL from outside: the kernel's OOM killer when other processes took the memory meanwhile
            v.over_budget = True
            v.skipped = (f"killed by the system after {seconds:.0f}s (SIGKILL: the kernel's out-of-memory killer "
                         "when other processes took memory meanwhile)")
            self.say(f"  [{stage}] {v.label}: {v.skipped}; log {log}")
        elif proc.returncode != 0 or not result_path.is_file():
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"rehearse: stage {stage} variant {v.label} failed (exit {proc.returncode}); "
                               f"log {log}:\n{tail}")
        else:
            v.result = json.loads(result_path.read_text())
            v.result["wall_seconds"] = seconds
            v.result["n_micro"] = n_micro
            result_path.write_text(json.dumps(v.result, indent=1, default=str))
            s = steady_state(v.result, self.opts.warmup)
            per = (f"{s['step_seconds']:.1f} s/step" if s["steady_steps"]
                   else f"{v.result['stage_seconds']:.1f} s for {v.micro_batch} questions")
            self.say(f"  [{stage}] {v.label}: {per}, peak {s['peak'] / GIB:.2f} GiB ({seconds:.0f}s)")
        # the variant's trained model and checkpoints are not needed: only the measurements
        for sub in ("stages",):
            shutil.rmtree(work / sub, ignore_errors=True)
        return v

    # ------------------------------------------------------------------ one stage
    def predict_peak(self, stage: str, v: Variant, done: list[Variant]) -> float:
        """Model state (exact) + the rest, from the measured variants (scaled by depth x micro-batch when
        there is one point, fitted when there are more); without a measurement, the model state alone."""
        state = self.state_at(stage, v.depth, self.proxies.get(stage))
        v.state_total = state.total
        pts = rest_points(done, self.opts.warmup)
        if not pts:
            return state.total
        if len(pts) == 1:
            x0, b0, r0 = pts[0]
            return state.total + r0 * max(1.0, (v.x / x0) * (v.micro_batch / b0))
        from .fit import fit_cost

        return state.total + max(fit_cost(pts)(v.x, v.micro_batch), monotone_floor(pts, v.x, v.micro_batch))

    def free_now(self) -> int:
        """Memory a variant may take right now: what the machine has available less 1 GiB for everything else
        (the budget is an upper bound; other processes may have taken part of it since the start)."""
        return memory.available_bytes(self.device) - GIB

    def wait_for_memory(self, need: float, label: str) -> bool:
        """Whether `need` bytes are free now, or become free within --wait-minutes (other processes on this
        machine finishing); says once that it waits. A variant skipped for want of free memory would leave
        the stage without the variants its fit needs, where waiting costs minutes."""
        if need <= self.free_now():
            return True
        deadline = time.monotonic() + self.opts.wait_minutes * 60
        if self.opts.wait_minutes > 0:
            self.say(f"  {label}: predicted {need / GIB:.1f} GiB, {self.free_now() / GIB:.1f} GiB free now (other "
                     f"processes): waiting up to {self.opts.wait_minutes:g} min for it")
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            if need <= self.free_now():
                return True
        return False

    def predict_minutes(self, stage: str, done: list[Variant]) -> float:
        """Wall minutes the full model's variant would take: its steps at the fitted seconds per step, plus
        the slowest variant's time outside its steps (loading, data, saving), scaled by depth."""
        from .fit import fit_cost

        pts, rest = [], []
        for v in done:
            s = steady_state(v.result, self.opts.warmup)
            step = s["step_seconds"] if s["steady_steps"] else v.result["stage_seconds"]
            pts.append((v.x, v.micro_batch, step))
            rest.append(max(0.0, (v.result.get("wall_seconds") or 0.0) - sum(x["seconds"] for x in v.result["steps"])))
        step = max(fit_cost(pts)(1.0, micro_batch(self.cfg, stage)), max(p[2] for p in pts))
        measured = self.opts.steps
        if self.opts.long_step_s is not None and self.opts.warmup >= 1 and step > self.opts.long_step_s:
            measured = 1                  # the probe's rule: a long warm-up step is followed by one measured
        steps = self.opts.warmup + measured + (1 if stage == "pasta" else 0) if stage != "eval" else 1
        scale = 1.0 / max(min(p[0] for p in pts), 1e-3)
        return (steps * step + max(rest) * min(scale, 4.0)) / 60

    def rehearse_stage(self, stage: str) -> StageRehearsal:
        out = StageRehearsal(stage)
        b_cfg = micro_batch(self.cfg, stage)
        done: list[Variant] = []
        proxy = self.proxy_freeze(stage)
        if proxy is not None:
            self.proxies[stage] = proxy
            low = self.smallest()
            alone = self.state_at(stage, low).total / GIB
            tied = self.tied_transient
            note = (f"{stage}: full fine-tuning's model state alone is {alone:.1f} GiB at {low.text} layers, over "
                    f"the {self.budget / GIB:.1f} GiB budget: its variants ran with freeze {proxy} (a proxy: the "
                    "same activations, the logits' gradient included); the model state above is the config's, "
                    "exact" + (f", and the rest includes the tied embedding's second gradient ({tied / GIB:.2f} "
                               "GiB) that the proxy does not hold" if tied else ""))
            self.notes.append(note)
            self.say(f"  [{stage}] {note}")

        def attempt(depth: Depth, b: int) -> Variant:
            v = Variant(depth, b, self.fraction(depth, stage))
            pred = self.predict_peak(stage, v, done)
            if pred > self.budget:
                v.skipped = f"predicted peak {pred / GIB:.1f} GiB > budget {self.budget / GIB:.1f} GiB"
                self.say(f"  [{stage}] {v.label}: skipped, {v.skipped}")
            elif not self.wait_for_memory(pred, f"[{stage}] {v.label}"):
                v.skipped = (f"predicted peak {pred / GIB:.1f} GiB > the {self.free_now() / GIB:.1f} GiB this "
                             f"machine had free after waiting {self.opts.wait_minutes:g} min (other processes)")
                self.say(f"  [{stage}] {v.label}: skipped, {v.skipped}")
            else:
                self.run_variant(stage, v)
                if v.result is not None:
                    done.append(v)
            out.variants.append(v)
            return v

        batches = [b_cfg]
        # a model too shallow to cut (the tiny ones) is measured as it is
        ladder = self.depths() or [self.full]
        for depth in ladder:
            b_idx = 0
            while True:
                v = attempt(depth, batches[b_idx])
                if v.result is not None:
                    break
                smaller = smaller_batch(stage, self.cfg, batches[b_idx])
                if smaller is None:
                    break
                if smaller not in batches:
                    batches.append(smaller)
                b_idx = batches.index(smaller)
        if not done:
            raise ConfigError(self._nothing_fits(stage, out.variants))
        if len({v.depth for v in done}) == 1 and len(ladder) > 1:
            # the deeper variant did not fit even at the smallest micro-batch: a depth between the two for the
            # slope over depth (without one, nothing extrapolates to the full model)
            low, high = ladder[0], ladder[1]
            for t in range(high.text - 1, low.text, -1):
                mid = self.depth_between(t)
                if mid in (low, high):
                    continue
                b = min(v.micro_batch for v in done)
                while b is not None:            # the micro-batch the shallow depth ran at, then smaller ones
                    if attempt(mid, b).result is not None:
                        ladder = [low, mid]
                        if b not in batches:
                            batches.append(b)
                        break
                    b = smaller_batch(stage, self.cfg, b)
                if ladder[1] == mid:
                    break
        if len(batches) > 1:
            # the config's micro-batch did not fit: a second micro-batch at each depth for the batch slope
            ran = {(v.depth, v.micro_batch) for v in done}
            b_run = min(v.micro_batch for v in done) if done else None
            if b_run is not None:
                second = smaller_batch(stage, self.cfg, b_run)
                if second is not None:
                    for depth in ladder:
                        if (depth, second) not in ran:
                            attempt(depth, second)
        if self.opts.full and done and all(v.x < 1.0 for v in done) and proxy is not None:
            out.variants.append(Variant(self.full, b_cfg, 1.0, skipped=f"the config's model state does not fit: "
                                        f"variants are the freeze {proxy} proxy"))
        elif self.opts.full and done and all(v.x < 1.0 for v in done):
            full_v = Variant(self.full, b_cfg, 1.0)
            pred = self.predict_peak(stage, full_v, done)
            full_v.result = None
            minutes = self.predict_minutes(stage, done)
            if pred > self.budget * 0.95:
                full_v.skipped = f"predicted peak {pred / GIB:.1f} GiB > budget {self.budget / GIB:.1f} GiB"
            elif not self.wait_for_memory(pred, f"[{stage}] full model"):
                full_v.skipped = (f"predicted peak {pred / GIB:.1f} GiB > the {self.free_now() / GIB:.1f} GiB this "
                                  f"machine had free after waiting {self.opts.wait_minutes:g} min (other processes)")
            elif minutes > self.opts.max_variant_minutes:
                full_v.skipped = (f"predicted {minutes:.0f} min > --max-variant-minutes "
                                  f"{self.opts.max_variant_minutes:g} (fits: {pred / GIB:.1f} GiB)")
            else:
                self.say(f"  [{stage}] full model predicted at {pred / GIB:.1f} GiB: measuring it")
                self.run_variant(stage, full_v)
            if full_v.skipped and not full_v.over_budget:
                self.say(f"  [{stage}] full model: skipped, {full_v.skipped}")
            out.variants.append(full_v)
        out.summary = self.summarize_stage(stage, out.variants)
        return out

    def _nothing_fits(self, stage: str, variants: list[Variant]) -> str:
        crowded = [v for v in variants if v.skipped and "other processes" in v.skipped]
        if crowded and not any(v.over_budget for v in variants):
            return (f"{stage}: no variant ran: {crowded[0].label}: {crowded[0].skipped}; other processes hold the "
                    "memory it needs (run the rehearsal alone, or wait longer: --wait-minutes)")
        disk = [v for v in variants if v.skipped and "of disk" in v.skipped]
        if disk and not any(v.over_budget for v in variants):
            return f"{stage}: no variant ran: {disk[0].label}: {disk[0].skipped} (free some, or another --out)"
        smallest = min(variants, key=lambda v: (v.x, v.micro_batch))
        state = self.state_at(stage, smallest.depth, self.proxies.get(stage)).total
        head = (f"{stage}: does not fit this machine even at {smallest.depth.text} decoder layers and micro-batch "
                f"{smallest.micro_batch}: ")
        if state > self.budget:
            return (head + f"model state alone {state / GIB:.1f} GiB > budget {self.budget / GIB:.1f} GiB "
                    "(a larger --budget on a larger machine, or LoRA / a smaller model in the config)")
        return head + f"it ran over the {self.budget / GIB:.1f} GiB budget (logs in {self.out / 'logs'})"

    def summarize_stage(self, stage: str, variants: list[Variant]) -> dict:
        from .summary import stage_summary

        summary = stage_summary(stage, self.cfg, self.hf, variants, self.opts.warmup, self.state_at(stage, self.full))
        summary["proxy_freeze"] = self.proxies.get(stage)
        if stage in self.proxies:
            add_proxy_transient(summary, self.tied_transient)
        return summary

    def run(self) -> dict:
        from .report import write_report

        stages = self.opts.stages or list(self.cfg.stages)
        unknown = [s for s in stages if s not in self.cfg.stages]
        if unknown:
            raise ConfigError(f"--stages: {unknown} are not stages of {self.opts.config} ({self.cfg.stages})")
        t0 = time.perf_counter()
        self.say(f"rehearse: {self.source} ({self.full.text} decoder layers, {self.full.vision} vision blocks; "
                 f"{'real' if self.real_weights else 'random'} weights), budget {self.budget / GIB:.1f} GiB")
        results = []
        for k, stage in enumerate(stages, 1):
            self.say(f"[{k}/{len(stages)}] {stage}")
            t = time.perf_counter()
            r = self.rehearse_stage(stage)
            r.summary["rehearsal_seconds"] = time.perf_counter() - t
            results.append(r)
        report = write_report(self, results, time.perf_counter() - t0)
        if not self.opts.keep_models:
            shutil.rmtree(self.out / "models", ignore_errors=True)
        return report


def add_proxy_transient(summary: dict, extra: int) -> None:
    """A frozen-embedding proxy's rest and peak at the config's size, plus what the config's full fine-tuning
    holds at the end of its backward and the proxy does not: a tied embedding's second gradient (`extra`).

    Why this is enough: every other byte of the embeddings' training state is in the exact model state
    added back (master weights, AdamW's moments: alive throughout; the head's gradient: alive from the start
    of the backward, where the proxy's peak lies). Checked on the 3B, whose qa_sft fits both ways
    (docs/rehearse.md)."""
    summary["proxy_transient"] = extra
    for key in ("rest", "peak"):
        v = summary[key]
        for k in ("value", "extrapolated"):
            if v.get(k) is not None:
                v[k] += extra
    if summary.get("gpu_rest") is not None:
        summary["gpu_rest"] += extra


def _same_spec(path: Path, spec: dict) -> bool:
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(spec))
    except (OSError, ValueError):
        return False


def n_micro_per_step(cfg, stage: str, b: int) -> int:
    """Micro-batches per optimizer step in the rehearsal: 1, except GRPO, whose optimizer step is one
    generation round of the config's size (micro-batch x steps_per_generation completions), whatever `b`."""
    if stage != "grpo":
        return 1
    return max(1, generation_batch(cfg) // b)


def smaller_batch(stage: str, cfg, b: int) -> int | None:
    """The next micro-batch down (halved; GRPO: a divisor of the generation round), None below 1."""
    if b <= 1:
        return None
    nxt = b // 2
    if stage == "grpo":
        gen = generation_batch(cfg)
        while nxt > 1 and gen % nxt:
            nxt -= 1
    return max(1, nxt)


def monotone_floor(points: list[tuple[float, float, float]], x: float, b: float) -> float:
    """The least a variant at (x, b) can need: the most any measured variant needed that is no deeper and no
    larger a micro-batch (a fit made to slope down by noise is not believed below that). Points that are
    deeper or larger say nothing about a smaller variant (a smaller micro-batch is what is tried when the
    config's does not fit)."""
    below = [y for px, pb, y in points if px <= x + 1e-9 and pb <= b]
    return max(below, default=0.0)


def rest_points(done: list[Variant], warmup: int) -> list[tuple[float, float, float]]:
    """(x, micro-batch, peak - model state) of the measured variants (`Variant.state`: the exact state)."""
    return [(v.x, v.micro_batch, steady_state(v.result, warmup)["peak"] - v.state_total) for v in done]


def as_dict(v: Variant) -> dict:
    return {**{k: val for k, val in asdict(v).items() if k != "result"}, "label": v.label,
            "depth": [v.depth.text, v.depth.vision]}
