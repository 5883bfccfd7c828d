"""`hatch-vlm rehearse`: the command line of hatch_vlm.rehearse (docs/rehearse.md)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "rehearse", help="every stage of a config at real model size for a few steps: memory, time, a GPU plan",
        description="Run each stage of a `hatch-vlm train` config for a few optimizer steps exactly as train "
                    "would, on the real model's architecture (random weights when the model directory has none, "
                    "e.g. configs/models/Qwen2.5-VL-3B-Instruct), measure memory (weights / gradients / "
                    "optimizer / rest) and time per stage, extrapolate over depth and micro-batch where this "
                    "machine is too small, and plan the GPUs. Writes OUT/rehearsal_<name>.{md,json,_plan.png}.")
    p.add_argument("--config", help="a `hatch-vlm train` config (YAML/JSON)")
    p.add_argument("--replan", default=None, metavar="REPORT.json",
                   help="plan a saved rehearsal for --gpus / --gpu-mem / --engine again, without running anything")
    p.add_argument("--compare", nargs=2, default=None, metavar=("PREDICTED.json", "MEASURED.json"),
                   help="a CPU rehearsal's plan for one GPU against a rehearsal of the same config run on that GPU: "
                        "writes compare_<predicted>_vs_<measured>.md beside the measured report")
    p.add_argument("--model", default=None,
                   help="model directory instead of the config's model.path: a checkpoint, or an architecture-only "
                        "directory (config.json + processor files, e.g. configs/models/Qwen2.5-VL-3B-Instruct)")
    p.add_argument("--out", default="runs/rehearse", help="where the report, logs and built variants go")
    p.add_argument("--steps", type=int, default=2, help="measured optimizer steps per variant (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps per variant (default 1)")
    p.add_argument("--long-step", type=float, default=60.0, dest="long_step_s", metavar="SECONDS",
                   help="a variant whose warm-up step took longer measures one step instead of --steps "
                        "(default 60; 0: always --steps)")
    p.add_argument("--wait-minutes", type=float, default=10.0,
                   help="how long a variant waits for memory that other processes hold (default 10)")
    p.add_argument("--stages", nargs="+", default=None, help="only these of the config's stages")
    p.add_argument("--budget", type=float, default=None, dest="budget_gib",
                   help="GiB a variant may use here (default: available memory less 4 GiB)")
    p.add_argument("--no-full", action="store_false", dest="full",
                   help="never run the full-size model, even where it is predicted to fit")
    p.add_argument("--max-variant-minutes", type=float, default=15.0,
                   help="skip a full-size variant predicted to take longer (its numbers are then extrapolated)")
    p.add_argument("--views", type=int, default=3, help="views per sample of the stand-in data (default 3)")
    p.add_argument("--name", default=None, help="report name (default: the model directory's name)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs to plan for (default 8)")
    p.add_argument("--gpu-mem", type=float, default=80.0, dest="gpu_mem_gib", help="GiB per GPU (default 80)")
    p.add_argument("--engine", default="ddp", help="ddp | zero2 | zero3 | fsdp (default ddp)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from hatch_vlm.utils.config import ConfigError

    from hatch_vlm.rehearse.runner import Rehearsal, RehearseOptions

    from hatch_vlm.rehearse.accounting import ENGINES

    if args.engine not in ENGINES:
        raise ConfigError(f"--engine: must be one of {', '.join(ENGINES)}, got {args.engine!r}")
    if args.compare:
        from hatch_vlm.rehearse.compare import compare

        compare(*args.compare)
        return 0
    if args.replan:
        from hatch_vlm.rehearse.report import replan

        replan(args.replan, args.gpus, args.gpu_mem_gib, args.engine)
        return 0
    if not args.config:
        raise ConfigError("--config: required (or --replan REPORT.json, or --compare PREDICTED.json MEASURED.json)")
    opts = RehearseOptions(config=args.config, model=args.model, out=args.out, steps=args.steps, warmup=args.warmup,
                           stages=args.stages, budget_gib=args.budget_gib, full=args.full, views=args.views,
                           name=args.name, max_variant_minutes=args.max_variant_minutes, gpus=args.gpus,
                           gpu_mem_gib=args.gpu_mem_gib, engine=args.engine,
                           long_step_s=args.long_step_s, wait_minutes=args.wait_minutes)
    Rehearsal(opts).run()
    return 0
