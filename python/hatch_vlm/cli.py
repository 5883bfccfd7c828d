"""The `hatch-vlm` command line.

    hatch-vlm demo [--model FAMILY]     the whole recipe on synthetic data with the tiny model (this machine)
    hatch-vlm train --config FILE       every stage of a config (resumes after an interruption)
    hatch-vlm ablate [--config FILE] [--seeds 0 1 2] [--quick]   the paper's ablation, shared stages once
    hatch-vlm sweep [--config FILE] --set pasta.grid=1,2,3,4,5,6 [--seeds ...]   one key over values, shared stages once
    hatch-vlm pasta --tiny --output-dir DIR [...]   the PaStA stage alone, metrics printed as JSON
    hatch-vlm eval --model DIR --benchmark spar-mv|mindcube|mmsi|spar-si|cv-bench|synthetic --data PATH
    hatch-vlm data synth / hatch-vlm data show
"""
from __future__ import annotations

import argparse
import os
import sys


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="run the stages of a HATCH config (resumable)")
    p.add_argument("--config", required=True, help="YAML or JSON config (see configs/)")
    _add_verbose(p)
    p.set_defaults(func=_cmd_train)


def _add_verbose(p) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="print the trainers' log dicts and progress bars too (they always go to each stage's "
                        "log.jsonl)")


def _cmd_train(args) -> int:
    from hatch_vlm.pipeline.runner import run_from_file
    from hatch_vlm.utils.distributed import shutdown

    run_from_file(args.config)
    shutdown()      # under `accelerate launch`: leave the process group cleanly (see shutdown)
    return 0


def _add_ablate(sub) -> None:
    p = sub.add_parser("ablate", help="the paper's ablation: full, w/o PaStA, w/o ActoR, QA only (resumable)",
                       description="Run the variants full / w/o PaStA / w/o ActoR / QA fine-tuning only of a "
                                   "config (its stages are the full recipe), sharing the stages they have in "
                                   "common, for each seed; write OUT/ablation.md (mean ± std over seeds, beside "
                                   "the paper's numbers). Rerun the same command to resume.")
    p.add_argument("--config", default=None, help="a `hatch-vlm train` config (default: the demo's)")
    p.add_argument("--out", default="runs/ablation", help="ablation directory (one run directory per seed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    p.add_argument("--quick", action="store_true",
                   help="shorter stages (hatch_vlm.pipeline.ablate.QUICK): the demo config in <= 15 min here")
    _add_verbose(p)
    p.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args) -> int:
    from hatch_vlm.pipeline.ablate import ablation_config, run_ablation
    from hatch_vlm.utils.distributed import init_distributed, shutdown

    init_distributed()
    run_ablation(ablation_config(args.out, args.config, args.quick), args.out, args.seeds)
    shutdown()
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="one config key over a list of values, shared stages once (resumable)",
                       description="Run a config once per value of one key (e.g. --set pasta.grid=1,2,3,4,5,6, the "
                                   "paper's Figure 4) and seed; the stages before the first one the key touches run "
                                   "once and are shared. Writes OUT/sweep.md (+ .png): each benchmark's Avg, mean ± "
                                   "std over seeds, against the value. Rerun the same command to resume.")
    p.add_argument("--config", default=None, help="a `hatch-vlm train` config (default: the demo's)")
    p.add_argument("--set", dest="setting", required=True, metavar="KEY=V1,V2,...",
                   help="the config key (section.key, e.g. pasta.grid) and its values, comma-separated")
    p.add_argument("--out", default="runs/sweep", help="sweep directory (one run directory per seed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    p.add_argument("--quick", action="store_true", help="shorter stages (as `hatch-vlm ablate --quick`)")
    _add_verbose(p)
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from hatch_vlm.pipeline.ablate import ablation_config
    from hatch_vlm.pipeline.sweep import check_key, parse_set, run_sweep
    from hatch_vlm.utils.distributed import init_distributed, shutdown

    setting = parse_set(args.setting)
    check_key(setting.key)          # before the demo config writes its benchmark files
    init_distributed()
    run_sweep(ablation_config(args.out, args.config, args.quick), setting, args.out, args.seeds)
    shutdown()
    return 0


# PastaConfig fields the `pasta` command sets, with their types (the rest keep PastaConfig's defaults)
_PASTA_OPTIONS = (("num_train", int), ("num_eval", int), ("image_size", int), ("views", int),
                  ("max_steps", int), ("per_device_train_batch_size", int), ("gradient_accumulation_steps", int),
                  ("grid", int),
                  ("learning_rate", float), ("max_seconds", float), ("save_steps", int), ("stride", int))


def _add_pasta(sub) -> None:
    p = sub.add_parser("pasta", help="run the PaStA stage alone and print its metrics as JSON",
                       description="Run the PaStA stage (on a freshly built tiny model with --tiny), e.g. "
                                   "`hatch-vlm pasta --tiny --output-dir runs/pasta --max-seconds 300`, and "
                                   "print the metrics as JSON. Options left out keep PastaConfig's defaults.")
    p.add_argument("--model-dir", help="saved Qwen2.5-VL directory (or use --tiny)")
    p.add_argument("--tiny", action="store_true", help="build the tiny model into OUTPUT_DIR/tiny first")
    p.add_argument("--family", default="qwen2.5-vl", choices=_families(), help="the family of --tiny's model")
    p.add_argument("--output-dir", required=True)
    for name, kind in _PASTA_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.add_argument("--tune", choices=("full", "lora"), default=None)
    p.add_argument("--data", choices=("auto", "synthetic", "toy_room"), default=None)
    p.set_defaults(func=_cmd_pasta, parser_error=p.error)


def _cmd_pasta(args) -> int:
    """Runs the stage; the main process prints its metrics as JSON."""
    import json
    from pathlib import Path

    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.stage import run_pasta_stage
    from hatch_vlm.utils.distributed import init_distributed, is_main, on_main, shutdown

    if not args.tiny and not args.model_dir:
        args.parser_error("give --model-dir or --tiny")
    init_distributed()          # no-op without a launcher
    model_dir = args.model_dir
    if args.tiny:
        from hatch_vlm.models.tiny import build_tiny_model

        # one rank builds it, the others wait for it
        model_dir = on_main(lambda: str(build_tiny_model(Path(args.output_dir) / "tiny", family=args.family)))
    overrides = {name: getattr(args, name) for name in ("tune", "data", *(n for n, _ in _PASTA_OPTIONS))
                 if getattr(args, name) is not None}
    results = run_pasta_stage(PastaConfig(model_dir=model_dir, output_dir=args.output_dir, **overrides))
    if is_main():
        print(json.dumps(results, indent=2))
    shutdown()          # under `accelerate launch`: leave the process group cleanly
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a benchmark")
    p.add_argument("--model", required=True, help="model directory (from_pretrained)")
    from hatch_vlm.eval.benchmarks import BENCHMARKS

    p.add_argument("--benchmark", required=True, action="append", choices=list(BENCHMARKS),
                   help="benchmark; repeat with --data for several. " +
                        "; ".join(f"{b.name}: {b.data_help}" for b in BENCHMARKS.values()))
    p.add_argument("--data", required=True, action="append", help="benchmark file or directory")
    p.add_argument("--image-root", action="append", default=None,
                   help="where the image paths of the matching --benchmark start, one per --benchmark in "
                        "order ('' keeps its default; MindCube's default: the JSONL's grandparent, data/)")
    p.add_argument("--batch-size", type=int, default=8, help="questions generated together")
    p.add_argument("--out", default=None, help="output directory (default: <model>/eval)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions of each benchmark")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--actor", action="store_true", help="prompt for actions then answer (ActoR)")
    p.add_argument("--baseline", default=None,
                   help="results.json of another run (e.g. the base model): the single-image table (the paper's "
                        "Table 4) then shows our change against it")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="image-token budget: resize each image to at most this many pixels (as model.max_pixels "
                        "in a training config; default: the checkpoint's)")
    p.add_argument("--min-pixels", type=int, default=None, help="... and at least this many")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    from hatch_vlm.eval.run import evaluate_cli

    if len(args.benchmark) != len(args.data):
        raise SystemExit("hatch-vlm eval: give one --data per --benchmark "
                         f"(got {len(args.benchmark)} benchmarks and {len(args.data)} data paths)")
    if args.baseline is not None and not os.path.isfile(args.baseline):      # before any generation
        raise SystemExit(f"hatch-vlm eval: --baseline {args.baseline} is not a file (a results.json of another run)")
    evaluate_cli(args)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the whole recipe on synthetic data with the tiny model")
    p.add_argument("--out", default="runs/demo", help="run and report directory")
    p.add_argument("--quick", action="store_true", help="a much shorter run (for tests)")
    p.add_argument("--model", default=None, choices=_families(),
                   help="the tiny model's family (default qwen2.5-vl, the paper's base)")
    _add_verbose(p)
    p.set_defaults(func=_cmd_demo)


def _families() -> list[str]:
    # hatch_vlm.models.adapters.FAMILIES, written out: `hatch-vlm --help` must not import torch
    # (tests/models/test_cli_families.py keeps the two equal)
    return ["qwen2.5-vl", "qwen3-vl", "internvl3"]


def _cmd_demo(args) -> int:
    from hatch_vlm.pipeline.demo import run_demo

    report = run_demo(args.out, quick=args.quick, family=args.model)
    print(f"hatch-vlm demo: report written to {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatch-vlm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_train(sub)
    _add_ablate(sub)
    _add_sweep(sub)
    _add_pasta(sub)
    _add_eval(sub)
    from hatch_vlm.commands.rehearse import register as register_rehearse

    register_rehearse(sub)
    try:
        from hatch_vlm.commands.data import register as register_data
    except ImportError:  # the data commands are optional in a partial checkout
        register_data = None
    if register_data is not None:
        register_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from hatch_vlm.utils.config import ConfigError
    from hatch_vlm.utils.errors import MainProcessError

    if getattr(args, "verbose", False):
        from hatch_vlm.pipeline.console import set_verbose

        set_verbose(True)
    try:
        return _leave(int(args.func(args) or 0))
    except ConfigError as e:  # one clear line, no traceback
        print(f"hatch-vlm {args.command}: bad config: {e}", file=sys.stderr)
        return 2
    except MainProcessError as e:  # the other ranks of a launch whose rank 0 failed (rank 0 said why)
        print(f"hatch-vlm {args.command}: {e}", file=sys.stderr)
        return 2 if ": ConfigError: " in str(e) else 1
    except KeyboardInterrupt:
        print(f"hatch-vlm {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except RuntimeError as e:
        # a multi-process job whose collective failed (a frozen or dead rank): say which rank went silent
        said = _collective_failure(e)
        if said is None:
            raise
        print(f"hatch-vlm {args.command}: {said}", file=sys.stderr)
        return 1


def _leave(rc: int) -> int:
    """A worker of a multi-process launch whose command finished (and left the process group: each command
    calls distributed.shutdown) exits here: the exit handlers run (the run lock, logging), the output is
    flushed, and the process ends without the interpreter's teardown. Why: under DeepSpeed on CPU a rank
    aborted now and then *after* a finished `hatch-vlm train`, while the interpreter finalized ("terminate
    called without an active exception", SIGABRT: a C++ thread object destroyed still joinable), and the
    launcher reported the finished run as failed (tests/scale/test_engine_resume.py with two test workers:
    3 launches of ~20). Elsewhere (one process, in-process callers) it returns `rc`."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return rc
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _collective_failure(e: BaseException) -> str | None:
    if "torch" not in sys.modules:
        return None
    from hatch_vlm.utils.distributed import describe_collective_failure

    return describe_collective_failure(e)


if __name__ == "__main__":
    sys.exit(main())
