"""Node-local state on a multi-node launch (tests/scale/test_multinode.py): every rank runs the pipeline's SPAR-7M
data step (`hatch_vlm.pipeline.runner.spar_data`) twice, first with the index cache where HATCH_CACHE_DIR puts it
(each "node" of the test its own directory: no shared filesystem), then with one directory both nodes see; writes
OUT/rank{R}.json with the training and held-out record ids of each."""
import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--shared-cache", required=True)
    ap.add_argument("--output-dir", required=True)
    args = ap.parse_args()

    from hatch_vlm.pipeline.config import DataSection
    from hatch_vlm.pipeline.runner import spar_data
    from hatch_vlm.utils import distributed as dist

    dist.init_distributed()
    record = {}
    for name, cache in (("own", "default"), ("shared", args.shared_cache)):
        d = DataSection(kind="spar", path=args.data, num_train=6, num_eval=2, index_cache=cache)
        train, held_out = spar_data(d)
        record[name] = [[s.record(i).id for i in range(len(s))] for s in (train, held_out)]
        dist.barrier()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{dist.rank()}.json").write_text(json.dumps(record))
    dist.shutdown()


if __name__ == "__main__":
    main()
