"""The shipped accelerate configs parse as accelerate configs and describe what their names say."""
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {
    "ddp_8gpu.yaml": (DistributedType.MULTI_GPU, 8),
    "fsdp_8gpu.yaml": (DistributedType.FSDP, 8),
    "deepspeed_zero2_8gpu.yaml": (DistributedType.DEEPSPEED, 8),
    "deepspeed_zero3_8gpu.yaml": (DistributedType.DEEPSPEED, 8),
    "cpu_2proc.yaml": (DistributedType.MULTI_GPU, 2),    # torchrun launcher; gloo on CPU (see the file)
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses(name):
    c = load_config_from_file(str(CONFIGS / name))
    kind, procs = EXPECTED[name]
    assert (c.distributed_type, c.num_processes, c.num_machines) == (kind, procs, 1)
    if "zero" in name:
        assert c.deepspeed_config["zero_stage"] == int(name.split("zero")[1][0])


def test_fsdp_wraps_existing_layer_classes():
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

    c = load_config_from_file(str(CONFIGS / "fsdp_8gpu.yaml"))
    for cls in c.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
        assert hasattr(modeling_qwen2_5_vl, cls), cls
