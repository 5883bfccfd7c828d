"""A frozen rank (SIGSTOP) ends a 2-process job within the timeout, naming the rank that went silent; a dead
one (SIGKILL) ends it at once. Timeout 10 s and a 1 s heartbeat here (the CPU default is 90 s, 5 s: with
torchrun's 30 s teardown a frozen rank ends the job within 2 minutes)."""
import re
import signal
import subprocess
import sys
import time

import pytest

from scale_launch import ROOT, free_port, launch_env, needs_gloo

pytestmark = [pytest.mark.slow, needs_gloo]


def _start(tmp_path):
    env = {**launch_env(), "HATCH_DIST_TIMEOUT_S": "10", "HATCH_HEARTBEAT_S": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "scale" / "hang_run.py")]
    log = open(tmp_path / "out.txt", "w+")
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    pids = {}
    while time.time() < deadline and len(pids) < 2:
        log.seek(0)
        pids = {int(r): int(q) for r, q in re.findall(r"rank (\d) pid (\d+) up", log.read())}
        time.sleep(0.2)
    assert len(pids) == 2, (tmp_path / "out.txt").read_text()[-3000:]
    time.sleep(3)                                    # heartbeats written
    return p, pids, log


@pytest.mark.parametrize("how", ["frozen", "dead"])
def test_a_silent_rank_ends_the_job_and_is_named(tmp_path, how):
    p, pids, log = _start(tmp_path)
    t = time.time()
    import os

    os.kill(pids[1], signal.SIGSTOP if how == "frozen" else signal.SIGKILL)
    try:
        p.wait(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
        try:
            os.kill(pids[1], signal.SIGKILL)
        except ProcessLookupError:
            pass
    seconds = time.time() - t
    out = (tmp_path / "out.txt").read_text()
    assert p.returncode != 0, out[-3000:]
    print(f"{how}: the job ended {seconds:.1f} s after rank 1 was {'stopped' if how == 'frozen' else 'killed'}")
    if how == "frozen":
        # the timeout, then torchrun's teardown: SIGTERM to the stopped rank, 30 s, SIGKILL
        assert seconds < 10 + 30 + 15, out[-3000:]
        assert re.search(r"rank 0: a collective failed .*silent: rank 1 \(last heard \d+ s ago\)", out), out[-3000:]
    else:
        assert seconds < 30, out[-3000:]
