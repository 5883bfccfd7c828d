"""`hatch-vlm rehearse`: every stage of a config at the real model's size, for a few optimizer steps, on this
machine, before any GPU hour is spent; what each stage costs (memory split into weights / gradients /
optimizer state / the rest, seconds per step, tokens, data loading, the PaStA op's share, generation speed),
extrapolated where the machine is too small, and a plan for a GPU cluster (docs/rehearse.md).

The parts, lowest first:

    memory        the process's peak (CPU: VmHWM, reset per step; CUDA: max_memory_allocated)
    accounting    model-state bytes, exact (Σ numel × dtype size), and how each engine shards them
    fit           least-squares fits of a stage's cost over depth fraction and micro-batch; extrapolation
    plan          per-GPU peaks under ddp / zero2 / zero3 / fsdp, FITS or OVER, the smallest change that fits
    architecture  architecture-only checkpoints: random weights built fast, fewer layers, a stand-in tokenizer
    probe         what a Trainer's steps cost, attached through hatch_vlm.utils.probes (same code path as train)
    worker        one stage of one model variant in its own process (a clean peak), as `train` runs it
    runner        the command: variants per stage chosen by estimate, workers, fits, the report
    report        rehearsal_<name>.{md,json} and the plan's figure
"""
