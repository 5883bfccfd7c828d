"""The one place hatch changes how accelerate chose to run a Trainer: FSDP2 on CPU processes.

accelerate turns a launch asking for FSDP (`distributed_type: FSDP`) into plain DDP when the processes have
no GPU (its state is MULTI_CPU, and FSDP is only considered for GPU-like types), and says nothing: a run that
was asked to shard would silently replicate. PyTorch's FSDP2 (`fully_shard`) does run on CPU tensors over
gloo, so for such a launch each hatch trainer switches its accelerator's state to FSDP with the launch's
plugin before anything is prepared. This is the CPU path (what the tests and a laptop use); on GPUs accelerate's
own FSDP runs unchanged. FSDP1 on CPU is refused, naming the setting.
"""
from __future__ import annotations

import os


def launch_asks_for_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def prepare_engine(trainer) -> str | None:
    """Called by each hatch trainer at the end of its __init__; returns "fsdp2-cpu" when it switched the
    accelerator to FSDP2 on CPU processes, None when nothing needed changing."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if not launch_asks_for_fsdp() or state.distributed_type != DistributedType.MULTI_CPU:
        return None
    plugin = getattr(state, "__dict__", {}).get("fsdp_plugin") or FullyShardedDataParallelPlugin()
    if int(getattr(plugin, "fsdp_version", 1)) != 2:
        from .config import ConfigError

        raise ConfigError("fsdp_config.fsdp_version: FSDP on CPU processes runs only as FSDP2 (fsdp_version: 2); "
                          f"the launch asks for FSDP{plugin.fsdp_version}")
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    return "fsdp2-cpu"
