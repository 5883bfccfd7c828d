"""A 2-rank job that all-reduces until a collective fails, then says which rank went silent (the test freezes
or kills one rank: tests/scale/test_faults.py)."""
import os
import sys
import time

import torch

from hatch_vlm.utils import distributed as dist

dist.init_distributed()
print(f"rank {dist.rank()} pid {os.getpid()} up", flush=True)
t = torch.ones(1)
start = time.time()
try:
    while True:
        torch.distributed.all_reduce(t)
        time.sleep(0.05)
except RuntimeError as e:
    print(f"FAILED after {time.time() - start:.1f}s: {dist.describe_collective_failure(e)}", flush=True)
    sys.exit(1)
