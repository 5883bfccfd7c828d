"""Runs a HATCH config stage by stage, resumably.

Layout of a run directory:

    <output_dir>/config.json          the config as resolved (a rerun with a different config refuses)
    <output_dir>/state.json           finished stages: their model directory and metrics (atomic writes)
    <output_dir>/model_init/          the built-in tiny model (model: tiny), written atomically
    <output_dir>/stages/<stage>/      each stage's work; its final model in model/ (atomic), metrics

A stage is marked done only after its outputs are complete, so a run killed at any point (kill -9
included) redoes at most the stage it was in, never a finished one, and never reads a torn file:
models are written into a temporary directory and renamed into place, weights as safetensors.

Under `accelerate launch` (several processes) every rank runs every stage's training, evaluation is split
across the ranks, and only the main process writes the run directory (`hatch_vlm.utils.distributed.on_main`):
an error there stops every rank with its message. A rank that dies kills the launch (torchrun stops the
others); the next launch resumes exactly as after a single-process kill.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence

from hatch_vlm.data.record import Sample
from hatch_vlm.utils.checkpoints import check_resumable, latest_complete_checkpoint, launched_engine
from hatch_vlm.utils import distributed as dist
from hatch_vlm.utils.config import ConfigError
from hatch_vlm.utils.io import atomic_directory, atomic_write_json, clean_partials, read_json

from .config import HatchConfig, load_config

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    model_dir: Path | None          # the model the next stage starts from (None: unchanged)
    metrics: dict = field(default_factory=dict)


class Run:
    """One run directory: the config, the data (built lazily, deterministic) and the stage state."""

    def __init__(self, cfg: HatchConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self._train: Sequence[Sample] | None = None
        self._eval: Sequence[Sample] | None = None
        # `hatch-vlm rehearse`: the stages train as ever, but skip the held-out reward checks after training
        # (generation over the held-out set: an evaluation, which the eval stage measures on its own)
        self.measure_only = False

    def with_config(self, cfg: HatchConfig) -> Run:
        """This run directory and its data under another config of the same run (an ablation variant: fewer
        stages, another evaluation prompt). The data are built once and shared."""
        other = Run(cfg)
        other.out, other._train, other._eval = self.out, self.train, self.held_out
        return other

    # ------------------------------------------------------------------ data
    def _load_data(self) -> None:
        d = self.cfg.data
        if d.kind == "synthetic":
            from hatch_vlm.data.synthetic import SceneConfig, iter_samples

            scene = SceneConfig(views=d.views, size=d.size)
            self._train = list(iter_samples(d.num_train, seed=d.seed, config=scene))
            # Held-out samples: indices after the training ones, so never seen in training.
            self._eval = list(iter_samples(d.num_eval, seed=d.seed, config=scene, start=d.num_train))
        else:
            self._train, self._eval = spar_data(d)

    @property
    def train(self) -> Sequence[Sample]:
        if self._train is None:
            self._load_data()
        return self._train

    @property
    def held_out(self) -> Sequence[Sample]:
        if self._eval is None:
            self._load_data()
        return self._eval

    # ------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.out / "state.json"

    def state(self) -> dict:
        return read_json(self.state_path, default={"stages": {}})

    def mark_done(self, stage: str, result: StageResult, seconds: float) -> None:
        state = self.state()
        state["stages"][stage] = {"done": True, "seconds": round(seconds, 1),
                                  "model_dir": str(result.model_dir) if result.model_dir else None,
                                  "metrics": result.metrics}
        atomic_write_json(self.state_path, state)

    def initial_model(self) -> Path:
        if self.cfg.model.path != "tiny":
            return Path(self.cfg.model.path)
        path = self.out / "model_init"
        if not (path / "config.json").exists():
            from hatch_vlm.models.tiny import build_tiny_model

            with atomic_directory(path) as tmp:
                build_tiny_model(tmp, seed=self.cfg.seed, family=self.cfg.model.tiny_family)
        return path


def spar_data(d) -> tuple[Sequence[Sample], Sequence[Sample]]:
    """(train, held_out) of a SPAR-7M tree: chosen from the text alone (the main process indexes, every rank
    gets the same choice), decoded lazily by whoever reads an item (hatch_vlm.data.spar7m)."""
    from hatch_vlm.data.common import DataError
    from hatch_vlm.data.spar7m import SparSamples, select_records
    from hatch_vlm.data.spar7m.frames import load_sample

    def depth_check(rec) -> None:      # decode a few candidates' depth: a wrong unit fails here, loudly
        load_sample(rec, d.depth_scale, draw_markers=False)

    def choose():
        try:
            return select_records(d.path, d.num_train, d.num_eval, seed=d.seed, split=d.split, tasks=d.tasks,
                                  min_views=d.min_views, answer_types=d.answer_types, depth_check=depth_check,
                                  cache_dir=d.index_cache, strict=d.strict,
                                  progress=dist.is_main())
        except DataError as e:
            raise ConfigError(f"data.path: {e}") from None

    sel = dist.on_main(choose)
    if d.index_cache:
        # Node-local state. The index cache is per node wherever its directory is on a node's own disk (the
        # default, ~/.cache): only rank 0 chose, so the other nodes would never have had one, and their ranks
        # would read records at byte offsets found in rank 0's copy of the data. So each other node's first
        # process makes the same choice from its own copy through its own cache, after rank 0: on a shared
        # cache directory every file is then found there (nothing written twice), on a node-local one it is
        # built (then reused at the next start); a different choice means the nodes' copies of data.path
        # differ, and the job stops (tests/scale/test_multinode.py).
        dist.on_node_mains(lambda: _same_choice_here(choose(), sel, d))
    for source, (checked, bad) in sel.info.get("depth_checked", {}).items():
        if bad and bad * 2 >= checked:
            # Half or more of a source's checked depth maps are implausible: its unit is wrong, not a few files.
            raise ConfigError(f"data.depth_scale: {bad} of {checked} checked depth maps of source {source!r} are "
                              f"implausible, e.g. "
                              f"{next((x for x in sel.summary.examples if 'implausible' in x), '')}")
    if len(sel.train) < 1 or len(sel.held_out) < 1:
        raise ConfigError(f"data.path: {d.path} has {len(sel.held_out) + len(sel.train)} usable records for "
                          f"split={d.split!r}, tasks={d.tasks}; need >= 2 ({sel.summary})")
    if dist.is_main():
        print(f"data: {len(sel.train)} training + {len(sel.held_out)} held-out records of {sel.num_records} "
              f"in {sel.seconds:.1f}s ({sel.cached_files} files from the index cache); {sel.summary}")
    return (SparSamples(sel.train, d.depth_scale), SparSamples(sel.held_out, d.depth_scale))


def _same_choice_here(mine, main, d) -> None:
    """On a node's first process (not rank 0's node): the records this node chose from its copy of the data
    must be rank 0's; says so, with what the node's index cache held."""
    import socket

    import numpy as np

    def key(refs):
        return [str(f.path) for f in refs.files], refs.file_idx, refs.offset

    for part in ("held_out", "train"):
        (fa, ia, oa), (fb, ib, ob) = key(getattr(mine, part)), key(getattr(main, part))
        if fa != fb or not (np.array_equal(ia, ib) and np.array_equal(oa, ob)):
            raise ConfigError(f"data.path: on {socket.gethostname()} (rank {dist.rank()}) {d.path} gives other "
                              f"{part} records than on the main node: the nodes' copies of the data differ")
    print(f"data (rank {dist.rank()}, first process of its node, {socket.gethostname()}): the main node's "
          f"{len(mine.train)} + {len(mine.held_out)} records; {mine.cached_files} of the {len(mine.train.files)} "
          "QA files' offsets were in this node's index cache", flush=True)


def resume_point(work_dir: Path, stage: str, progress: Callable[[str], None] = print) -> str | None:
    """The last complete Trainer checkpoint of an interrupted stage, announced; None to start afresh.

    The main process looks (and removes a checkpoint torn by a kill); every rank gets its answer. A checkpoint
    written under another engine (or, under DeepSpeed, on another number of processes) is refused here,
    before the stage trains: the Trainer would resume it with a fresh optimizer state without a word
    (utils.checkpoints.check_resumable)."""
    def find() -> Path | None:
        ckpt = latest_complete_checkpoint(work_dir)
        if ckpt is not None:
            check_resumable(ckpt, launched_engine(), dist.world_size(), stage)
        return ckpt

    ckpt = dist.on_main(find)
    if ckpt is not None and dist.is_main():
        progress(f"{stage}: resuming from {ckpt}")
    return str(ckpt) if ckpt else None


def save_trained(trainer, processor, path: Path) -> Path:
    """Atomically writes the trainer's (LoRA-merged) model and `processor` to `path` (safetensors).

    Every rank calls it: under FSDP or DeepSpeed ZeRO-3 the parameters are sharded across ranks and are
    gathered (a collective) into a full state dict that the main process writes.
    """
    from hatch_vlm.models.saving import gather_full_state, write_trained_model

    state = gather_full_state(trainer)

    def write() -> str:
        with atomic_directory(path) as tmp:
            write_trained_model(trainer, tmp, state)
            processor.save_pretrained(tmp)
        return str(path)

    return Path(dist.on_main(write))


def _copy_model_dir(src: Path, dst: Path) -> Path:
    """Main process: atomically copies a saved model directory to `dst`; every rank gets `dst`."""
    import shutil

    def copy() -> str:
        with atomic_directory(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        return str(dst)

    return Path(dist.on_main(copy))


# ---------------------------------------------------------------------- stages
def _pasta(run: Run, model_dir: Path, stage_dir: Path) -> StageResult:
    from hatch_vlm.pasta.stage import run_pasta_stage

    work = stage_dir / "work"
    opts = run.cfg.pasta.to_pasta_config(model_dir=str(model_dir), output_dir=str(work),
                                         resume_from_checkpoint=resume_point(work, "pasta"),
                                         num_workers=run.cfg.data.workers, **run.cfg.model.pixels)
    metrics = run_pasta_stage(opts, run.train, run.held_out)     # every rank trains; rank 0 evaluates
    final = _copy_model_dir(Path(metrics["checkpoint"]), stage_dir / "model")
    return StageResult(final, {k: v for k, v in metrics.items() if k != "checkpoint"})


def _sft(run: Run, model_dir: Path, stage_dir: Path, name: str, rows: list[dict]) -> StageResult:
    from hatch_vlm.actor.sft import run_sft
    from hatch_vlm.models.loading import load_model_and_processor, restore_weights

    model, processor = load_model_and_processor(model_dir, **run.cfg.model.pixels)
    opts = getattr(run.cfg, name)
    work = stage_dir / "work"
    ckpt = resume_point(work, name)
    trainer = run_sft(restore_weights(model, ckpt), processor, rows, work, opts,
                      resume_from_checkpoint=ckpt, num_workers=run.cfg.data.workers)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]   # averaged over ranks
    final = save_trained(trainer, processor, stage_dir / "model")
    return StageResult(final, {"steps": trainer.state.global_step, "rows": len(rows),
                               "first_loss": losses[0] if losses else None,
                               "last_loss": losses[-1] if losses else None,
                               **_substitutions(rows, run.cfg.data.workers)})


def _substitutions(rows, workers: int) -> dict:
    """The rows replaced because their sample could not be made into one (formatting.LazyRows), as counted
    by this process: with DataLoader workers they count in their own copies (and log each kind once)."""
    problems = getattr(rows, "problems", None)
    if not problems:
        return {}
    return {"rows_substituted": sum(problems.values()), "rows_substituted_by": dict(problems),
            **({"rows_substituted_note": "counted in the main process only; workers logged theirs"}
               if workers else {})}


def _qa_sft(run: Run, model_dir: Path, stage_dir: Path) -> StageResult:
    from hatch_vlm.actor.formatting import LazyRows, qa_sft_row

    return _sft(run, model_dir, stage_dir, "qa_sft", LazyRows(run.train, qa_sft_row))


def _actor_sft(run: Run, model_dir: Path, stage_dir: Path) -> StageResult:
    from hatch_vlm.actor.formatting import LazyRows, cold_start_row

    n = max(1, math.ceil(run.cfg.data.actor_fraction * len(run.train)))
    result = _sft(run, model_dir, stage_dir, "actor_sft", LazyRows(run.train[:n], cold_start_row))
    if not run.measure_only:
        result.metrics.update(_held_out_rewards(run, result.model_dir))
    return result


def _held_out_rewards(run: Run, model_dir: Path) -> dict:
    """{"held_out_<reward>": mean} of greedy ActoR completions of the model on the held-out samples (every
    rank generates its share). The action reward is always the product shape (rewards.action_reward), so
    that the numbers compare across runs whatever shape GRPO trains with."""
    from hatch_vlm.actor.held_out import held_out_rewards
    from hatch_vlm.models.loading import load_model_and_processor

    model, processor = load_model_and_processor(model_dir, device=dist.local_device(), **run.cfg.model.pixels)
    rewards = held_out_rewards(model, processor, run.held_out, run.cfg.eval.max_new_tokens,
                               run.cfg.eval.batch_size)
    return {f"held_out_{k}": v for k, v in rewards.items()}


def _grpo(run: Run, model_dir: Path, stage_dir: Path) -> StageResult:
    from hatch_vlm.actor.formatting import LazyRows, grpo_row
    from hatch_vlm.actor.grpo import reward_fifths, run_grpo
    from hatch_vlm.models.loading import load_model_and_processor, restore_weights

    model, processor = load_model_and_processor(model_dir, **run.cfg.model.pixels)
    opts = run.cfg.grpo
    work = stage_dir / "work"
    ckpt = resume_point(work, "grpo")
    aux = pasta_term(run.cfg) if opts.pasta_weight > 0 else None
    if aux is not None:
        from hatch_vlm.models.adapters import adapter_for_model

        adapter = adapter_for_model(model)
        if adapter.layout_key != "image_grid_thw":
            # TRL's GRPO batch carries pixel_values and image_grid_thw only: InternVL's tile layout is not in it
            raise ConfigError(f"grpo.pasta_weight: the PaStA term in GRPO needs the images' layout in TRL's batch "
                              f"(image_grid_thw, the Qwen families); an {adapter.family} batch has none: set "
                              "grpo.pasta_weight: 0 (PaStA itself runs in the pasta stage)")
    # the rows carry the views' geometry only for the PaStA term (it is a lot of data per row)
    make_row = grpo_row if aux is None else _grpo_row_with_geometry
    rows = LazyRows(run.train, make_row)
    trainer = run_grpo(restore_weights(model, ckpt), processor, rows, work,
                       opts, aux_loss_fn=aux, resume_from_checkpoint=ckpt, num_workers=run.cfg.data.workers)
    metrics: dict = {"steps": trainer.state.global_step,
                     "reward_log": str(stage_dir / "work" / "reward_log.json"),
                     "plot": str(stage_dir / "work" / "rewards.png") if opts.plot else None}
    for name, (first, last) in reward_fifths(trainer.state.log_history).items():
        metrics[f"{name}_reward_first"], metrics[f"{name}_reward_last"] = first, last
    metrics.update(_substitutions(rows, run.cfg.data.workers))
    pasta = [e["pasta_loss"] for e in trainer.state.log_history if "pasta_loss" in e]
    if pasta:
        metrics["pasta_loss_first"], metrics["pasta_loss_last"] = pasta[0], pasta[-1]
    final = save_trained(trainer, processor, stage_dir / "model")
    if not run.measure_only:
        metrics.update(_held_out_rewards(run, final))   # comparable with the cold start's
    return StageResult(final, metrics)


def _grpo_row_with_geometry(sample: Sample) -> dict:
    from hatch_vlm.actor.formatting import grpo_row

    return grpo_row(sample, geometry=True)


def pasta_term(cfg: HatchConfig):
    """GRPO's auxiliary term: grpo.pasta_weight × the PaStA loss (the pasta section's loss settings) on each
    prompt's images and geometry, once per prompt (`prompt_geometry_batch`)."""
    from hatch_vlm.actor.grpo import prompt_geometry_batch
    from hatch_vlm.pasta.objective import pasta_aux_loss

    weight = cfg.grpo.pasta_weight
    loss_settings = cfg.pasta.to_pasta_config(model_dir="", output_dir="")

    def aux(model, inputs):
        return pasta_aux_loss(model, prompt_geometry_batch(inputs), weight, loss_settings)

    return aux


def _eval(run: Run, model_dir: Path, stage_dir: Path) -> StageResult:
    from hatch_vlm.eval.run import decoding_settings, evaluate_benchmark, load_benchmark, write_results
    from hatch_vlm.models.loading import load_model_and_processor

    e = run.cfg.eval
    model, processor = load_model_and_processor(model_dir, device=dist.local_device(), **run.cfg.model.pixels)

    def evaluate(samples, name):
        # Each rank answers its share of the missing questions (completions kept in stage_dir/completions/,
        # so a killed stage resumes without regenerating); the records come back in order on every rank.
        return evaluate_benchmark(model, processor, samples, name, stage_dir, actor=e.actor,
                                  max_new_tokens=e.max_new_tokens, batch_size=e.batch_size)

    records = []
    if e.synthetic:
        records += evaluate(run.held_out[:e.limit] if e.limit else run.held_out, "synthetic")
    for b in e.benchmarks:
        records += evaluate(load_benchmark(b.name, b.path, e.limit, image_root=b.image_root), b.name)
    settings = decoding_settings(processor, model, e.actor, e.max_new_tokens)
    summary = dist.on_main(lambda: write_results(stage_dir, "hatch (this run)", records, actor=e.actor,
                                                 settings=settings))
    return StageResult(None, {"summary": summary, "results": str(stage_dir / "results.json")})


STAGE_FUNCS: dict[str, Callable[[Run, Path, Path], StageResult]] = {
    "pasta": _pasta, "qa_sft": _qa_sft, "actor_sft": _actor_sft, "grpo": _grpo, "eval": _eval}


def _check_same_config(run: Run) -> None:
    saved = read_json(run.out / "config.json")
    now = asdict(run.cfg)
    if saved is not None and saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ConfigError(f"output_dir {run.out} holds a run with a different config (changed: "
                          f"{', '.join(changed)}); use another output_dir or delete that one")
    if saved is None:
        atomic_write_json(run.out / "config.json", now)


def _check_engine(cfg: HatchConfig) -> None:
    """Refuse, before any training, what cannot be saved at the end: a merged LoRA model under FSDP or
    ZeRO-3 (the adapters would have to be merged into gathered shards; see hatch_vlm.models.saving)."""
    from hatch_vlm.models.saving import launched_sharded

    engine = launched_sharded()
    if engine is None:
        return
    lora = [s for s in cfg.stages if (s == "pasta" and cfg.pasta.tune == "lora")
            or (s in ("qa_sft", "actor_sft", "grpo") and getattr(cfg, s).lora)]
    if lora:
        raise ConfigError(f"{', '.join(lora)}: LoRA cannot be merged and saved under {engine} (sharded "
                          "parameters); launch with configs/accelerate/ddp_8gpu.yaml or "
                          "deepspeed_zero2_8gpu.yaml, or train these stages without LoRA")


def _prepare(run: Run) -> str:
    """Main process: the run directory, its config, the initial model; returns the model's directory."""
    run.out.mkdir(parents=True, exist_ok=True)
    _check_same_config(run)
    for leftover in clean_partials(run.out):
        log.info("removed the leftover of an interrupted write: %s", leftover)
    return str(run.initial_model())


def start_run(cfg: HatchConfig, progress: Callable[[str], None] = print) -> tuple[Run, Path, Callable]:
    """Every rank: the checks before any training, the process group, threads; the main process prepares the
    run directory. Returns (run, the initial model's directory, `say`: `progress` on the main process only)."""
    run = Run(cfg)
    _check_engine(cfg)
    dist.init_distributed(cfg.dist_timeout_s)
    say = progress if dist.is_main() else (lambda _msg: None)
    if dist.is_main():
        # one writer per run directory, whatever the launcher (utils/run_lock.py)
        from hatch_vlm.utils.run_lock import acquire

        acquire(run.out, say)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    model_dir = Path(dist.on_main(lambda: _prepare(run)))
    if dist.world_size() > 1:
        say(f"{dist.world_size()} processes: every rank trains, rank 0 writes {run.out}")
    return run, model_dir, say


def run_chain(run: Run, chain: Sequence[tuple[str, str]], model_dir: Path, say: Callable[[str], None],
              title: str = "") -> Path:
    """Runs the stages of `chain` in order, each from the model the one before left; returns the last model.

    `chain`: (key, stage) pairs. `key` names the stage's entry in state.json and its directory under
    `<output_dir>/stages/` (`hatch-vlm train`: the stage's name; `hatch-vlm ablate`: the stages leading to it,
    so that variants sharing a prefix share its results). A key already done is skipped."""
    from .console import stage_console

    done = dist.on_main(lambda: run.state()["stages"])
    for k, (key, stage) in enumerate(chain, 1):
        head = f"{title}[{k}/{len(chain)}] {stage}"
        if done.get(key, {}).get("done"):
            model_dir = Path(done[key]["model_dir"] or model_dir)
            say(f"{head}: done in an earlier run, skipped" if key == stage
                else f"{head}: already done ({key}), shared")
            continue
        say(f"{head}: running (from {model_dir})")
        start = time.time()
        # the stage's live line on a terminal; the trainer's log dicts to its log.jsonl (pipeline/console.py)
        with stage_console(head, run.out / "stages" / key / "log.jsonl"):
            result = STAGE_FUNCS[stage](run, model_dir, run.out / "stages" / key)
        seconds = time.time() - start
        # on_main runs the function now (bound to this iteration's values)
        dist.on_main(lambda key=key, result=result, seconds=seconds: run.mark_done(key, result, seconds))
        model_dir = result.model_dir or model_dir
        say(f"{head}: finished in {seconds:.0f}s — {_brief(result.metrics)}")
    return model_dir


def run_pipeline(cfg: HatchConfig, progress: Callable[[str], None] = print) -> dict:
    """Runs every stage of `cfg` not yet done in its output_dir; returns the final state.

    Also under `accelerate launch` with several processes (see the module doc)."""
    run, model_dir, say = start_run(cfg, progress)
    model_dir = run_chain(run, [(s, s) for s in cfg.stages], model_dir, say)

    def finish() -> dict:
        state = run.state()
        state["final_model"] = str(model_dir)
        atomic_write_json(run.state_path, state)
        return state

    return dist.on_main(finish)


def _brief(metrics: dict) -> str:
    items = []
    for k, v in metrics.items():
        if isinstance(v, float):
            items.append(f"{k}={v:.3g}")
        elif isinstance(v, (int, bool)) and not isinstance(v, dict):
            items.append(f"{k}={v}")
    return ", ".join(items[:8]) or "ok"


def run_from_file(path: str | Path) -> dict:
    return run_pipeline(load_config(path))
