"""Every stage under DeepSpeed ZeRO-2, ZeRO-3 and FSDP2 on 2 CPU processes (gloo; DeepSpeed's CPU
accelerator; FSDP2 through hatch's CPU switch, utils/engines.py) trains the same weights as 1 process on the same
global batch: PaStA (the vision tower), the SFT trainer and GRPO (full fine-tuning; LoRA under ZeRO-3 / FSDP is
refused at start by `hatch-vlm train`). Under ZeRO-3 and FSDP the saved weights were gathered from shards (the
records say so: without the CPU switch, FSDP would have run as plain DDP). The tolerances are per engine
and stage (float32 sums in another order); the measured differences are printed. DDP: tests/scale/test_ddp_*.

SFT and GRPO also run as 2 simulated nodes x 1 process (DDP), against the same 1-process runs.

DeepSpeed is an optional dependency: .ci/run installs it (`DS_BUILD_OPS=0 pip install --no-build-isolation
--no-deps deepspeed` + its small deps); without it these tests are skipped, saying so."""
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from _ddp_weights import max_weight_diff
from scale_launch import ROOT, needs_gloo, run_ranks, skip_without_deepspeed

# tests/conftest.py runs tests/scale in one xdist worker, so the 1-process runs (`one`, module-scoped, ~30 s)
# are made once rather than once per worker that draws one of its tests
pytestmark = [pytest.mark.slow, needs_gloo]
CONFIGS = {e: ROOT / "configs" / "accelerate" / f"cpu_2proc_{e}.yaml" for e in ("zero2", "zero3", "fsdp")}
SHARDED = {"zero2": False, "zero3": True, "fsdp": True}
# script, optimizer steps, global batch (per step, all processes)
STAGES = {"pasta": ("pasta_run.py", 3, 4), "sft": ("sft_run.py", 3, 4), "grpo": ("grpo_run.py", 2, 8)}
TOLERANCE = {("zero2", "pasta"): 1e-5, ("zero3", "pasta"): 2e-5, ("zero2", "sft"): 1e-6, ("zero3", "sft"): 1e-6,
             ("zero2", "grpo"): 5e-6, ("zero3", "grpo"): 5e-6,
             ("fsdp", "pasta"): 1e-5, ("fsdp", "sft"): 1e-6, ("fsdp", "grpo"): 5e-6}
# 2 nodes x 1 process (DDP over localhost) vs 1 process; measured 1.5e-8 (SFT), 3.0e-8 (GRPO)
NODES_TOLERANCE = {"sft": 1e-6, "grpo": 1e-6}


def _weights(out: Path, stage: str) -> Path:
    return out / "final" / "model.safetensors" if stage == "pasta" else out / "final.safetensors"


def _run(stage, out, tiny_dir, procs, config=None, nodes=False):
    script, steps, batch = STAGES[stage]
    kw = {"config": config} if config else {}
    return run_ranks(ROOT / "tests" / "scale" / script, out, tiny_dir, procs, steps, batch, timeout=600, nodes=nodes,
                     **kw)


@pytest.fixture(scope="module")
def one(tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("engines_one")
    return {s: (_run(s, base / s, tiny_dir, 1), base / s) for s in STAGES}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("engine", list(CONFIGS))
def test_two_processes_equal_one(engine, stage, one, tiny_dir, tmp_path):
    skip_without_deepspeed(engine)
    ranks = _run(stage, tmp_path / "two", tiny_dir, 2, CONFIGS[engine])
    one_ranks, one_dir = one[stage]
    if stage == "pasta":
        a, b = (load_file(_weights(d, stage)) for d in (one_dir, tmp_path / "two"))
        start = load_file(Path(tiny_dir) / "model.safetensors")
        keys = [k for k in a if "visual." in k]
        moved = max((a[k] - start[k]).abs().max().item() for k in keys)
        diff = max((a[k] - b[k]).abs().max().item() for k in keys)
        assert ranks[0]["sharded"] == [SHARDED[engine]]          # the save gathered the shards
    else:
        moved = max_weight_diff(one_dir / "start.safetensors", _weights(one_dir, stage))
        diff = max_weight_diff(_weights(one_dir, stage), _weights(tmp_path / "two", stage))
        assert [r["world_size"] for r in ranks] == [2, 2]
        assert [r["sharded"] for r in ranks] == [SHARDED[engine]] * 2
    print(f"{engine} {stage}: 2 processes vs 1, max weight difference {diff:.2e} (training moved {moved:.2e})")
    assert moved > 1e-3 and diff <= TOLERANCE[engine, stage], (diff, moved)
    # one writer: the weights and the run's files are rank 0's alone
    assert json.loads((tmp_path / "two" / "rank1.json").read_text())
    assert not list((tmp_path / "two").glob("**/rank1*.safetensors"))


# 2 "nodes" x 1 process on this host (accelerate --num_machines 2 --multi_gpu, localhost; DDP over gloo), against
# the 1-process runs above; PaStA on 2 nodes: tests/scale/test_multinode.py
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_two_nodes_equal_one(stage, one, tiny_dir, tmp_path):
    ranks = _run(stage, tmp_path / "nodes", tiny_dir, 2, nodes=True)
    _, one_dir = one[stage]
    assert [r["world_size"] for r in ranks] == [2, 2]
    moved = max_weight_diff(one_dir / "start.safetensors", _weights(one_dir, stage))
    diff = max_weight_diff(_weights(one_dir, stage), _weights(tmp_path / "nodes", stage))
    print(f"2 nodes {stage}: 2 nodes x 1 process vs 1 process, max weight difference {diff:.2e} (moved {moved:.2e})")
    assert moved > 1e-3 and diff <= NODES_TOLERANCE[stage], (diff, moved)
