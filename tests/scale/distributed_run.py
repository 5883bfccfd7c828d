"""Run by tests/scale/test_distributed_utils.py under `torchrun --nproc_per_node 2`: exercises
hatch_vlm.utils.distributed on real gloo collectives and writes what each rank saw to OUT/rank{R}.json."""
import json
import sys
from pathlib import Path

from hatch_vlm.utils import distributed as dist


def main(out: Path) -> None:
    assert dist.init_distributed(timeout_s=60)
    r, w = dist.rank(), dist.world_size()
    items = [f"item{k}" for k in range(7)]                 # not a multiple of the world size
    local = [f"{x}@{r}" for x in dist.shard(items)]
    gathered = dist.gather_list(local, len(items))
    calls = []
    value = dist.on_main(lambda: calls.append(r) or {"answer": 42})
    try:
        dist.on_main(lambda: 1 / 0)
        error = None
    except Exception as exc:                             # rank 0: ZeroDivisionError, others: MainProcessError
        error = f"{type(exc).__name__}: {exc}"
    dist.barrier()
    (out / f"rank{r}.json").write_text(json.dumps({
        "rank": r, "world": w, "main": dist.is_main(), "shard": dist.shard(items), "gathered": gathered,
        "value": value, "ran_fn": calls, "error": error}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    dist.shutdown()
