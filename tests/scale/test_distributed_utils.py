"""hatch_vlm.utils.distributed: identity with one process; with 2 processes (torchrun, gloo) the shards cover
the items once, gathering restores their order, `on_main` runs once and hands its result (or its error) to
every rank."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hatch_vlm.utils import distributed as dist
from scale_launch import free_port, launch_env, needs_gloo

ROOT = Path(__file__).resolve().parents[2]


def test_single_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_distributed() is False
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert dist.shard([1, 2, 3]) == [1, 2, 3] and dist.gather_list([1, 2, 3], 3) == [1, 2, 3]
    assert dist.on_main(lambda: "x") == "x"
    with pytest.raises(ZeroDivisionError):
        dist.on_main(lambda: 1 / 0)


@needs_gloo
def test_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(ROOT / "tests" / "scale" / "distributed_run.py"), str(tmp_path)]
    r = subprocess.run(cmd, env=launch_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    items = [f"item{k}" for k in range(7)]
    assert [x["world"] for x in ranks] == [2, 2] and [x["main"] for x in ranks] == [True, False]
    assert sorted(ranks[0]["shard"] + ranks[1]["shard"]) == sorted(items)
    assert not set(ranks[0]["shard"]) & set(ranks[1]["shard"])
    expected = [f"{x}@{0 if x in ranks[0]['shard'] else 1}" for x in items]
    assert ranks[0]["gathered"] == ranks[1]["gathered"] == expected
    assert ranks[0]["value"] == ranks[1]["value"] == {"answer": 42}
    assert ranks[0]["ran_fn"] == [0] and ranks[1]["ran_fn"] == []        # ran once, on rank 0
    assert ranks[0]["error"].startswith("ZeroDivisionError")
    assert ranks[1]["error"].startswith("MainProcessError") and "ZeroDivisionError" in ranks[1]["error"]
