"""One writer per run directory (utils/run_lock.py), and a launch that asked for several processes but left
this one alone is refused at start (utils/distributed.check_launch)."""
import json
import socket
import subprocess
import sys

import pytest

from hatch_vlm.utils import run_lock
from hatch_vlm.utils.config import ConfigError
from hatch_vlm.utils.distributed import check_launch


def _lock_of(pid, host=None, started=None):
    return {"host": host or socket.gethostname(), "pid": pid, "started": started, "command": "hatch-vlm train",
            "since": "2026-12-07 03:00:00 UTC"}


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / run_lock.LOCK_NAME).write_text(json.dumps(
            _lock_of(holder.pid, started=run_lock._start_time(holder.pid))))
        with pytest.raises(ConfigError, match=rf"is being written by pid {holder.pid} on host "
                                              rf"{socket.gethostname()} since .*'hatch-vlm train'"):
            run_lock.acquire(tmp_path, say=lambda _m: None)
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone now: its lock is taken over, and said so
    said = []
    path = run_lock.acquire(tmp_path, say=said.append)
    assert json.loads(path.read_text())["pid"] != holder.pid and "taken over" in said[0]
    assert run_lock.acquire(tmp_path) == path                  # again by the same process: fine
    run_lock.release(tmp_path)
    assert not path.exists()


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    """A dead holder's pid now used by another process (another start time): the lock is stale."""
    import os

    (tmp_path / run_lock.LOCK_NAME).write_text(json.dumps(_lock_of(os.getppid(), started="1")))
    said = []
    run_lock.acquire(tmp_path, say=said.append)
    assert said and "gone" in said[0]
    run_lock.release(tmp_path)


def test_another_hosts_lock_says_how_to_clear_it(tmp_path):
    (tmp_path / run_lock.LOCK_NAME).write_text(json.dumps(_lock_of(1234, host="node-7")))
    with pytest.raises(ConfigError, match=r"pid 1234 on host node-7 .* if it is known to be dead, delete .*"
                                          r"\.hatch-lock"):
        run_lock.acquire(tmp_path, say=lambda _m: None)


def test_the_lock_goes_with_the_process_and_a_killed_one_is_taken_over(tmp_path):
    code = ("import sys; from hatch_vlm.utils import run_lock; run_lock.acquire(sys.argv[1]); "
            "print('held', flush=True); sys.stdin.read() if len(sys.argv) > 2 else None")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True)
    assert not (tmp_path / run_lock.LOCK_NAME).exists()          # released at exit
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "wait"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {p.pid}"):
        run_lock.acquire(tmp_path, say=lambda _m: None)
    p.kill()                                                     # SIGKILL: no exit handler runs
    p.wait()
    assert (tmp_path / run_lock.LOCK_NAME).exists()
    said = []
    run_lock.acquire(tmp_path, say=said.append)
    assert "taken over" in said[0]
    run_lock.release(tmp_path)


def test_a_launch_that_left_this_process_alone_is_refused():
    # accelerate's plain launcher with --num_machines 2 (no --multi_gpu): MASTER_* set, no WORLD_SIZE
    env = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(ConfigError, match=r"add --multi_gpu to `accelerate launch`"):
        check_launch(env)
    check_launch({**env, "WORLD_SIZE": "2", "RANK": "1"})           # a real multi-process launch
    check_launch({"MASTER_ADDR": "10.0.0.1"})                      # not accelerate's launcher: not ours to judge
    check_launch({})


def test_train_refuses_a_run_directory_another_job_writes(tmp_path, capsys):
    from hatch_vlm.cli import main

    out = tmp_path / "run"
    code = ("import sys; from hatch_vlm.utils import run_lock; run_lock.acquire(sys.argv[1]); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(f"model: tiny\noutput_dir: {out}\nstages: [pasta]\n")
        assert main(["train", "--config", str(cfg)]) == 2
        assert f"is being written by pid {p.pid}" in capsys.readouterr().err
        assert not (out / "state.json").exists()                # nothing was written
    finally:
        p.kill()
        p.wait()


def test_a_worker_whose_launcher_is_killed_stops():
    """`kill -9` of a launcher: its worker (here started by a stand-in launcher) notices within the watch
    interval and exits, instead of training on as an orphan."""
    import time
    from pathlib import Path

    worker = ("import time; from hatch_vlm.utils.distributed import watch_parent; watch_parent(0.2); "
              "print('watching', flush=True); time.sleep(120)")
    launcher = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]]); "
                "print(p.pid, flush=True); p.wait()")
    def running(pid):            # a process that exited but is not reaped yet (a zombie) is not running
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    la = subprocess.Popen([sys.executable, "-c", launcher, worker], stdout=subprocess.PIPE, text=True)
    pid = int(la.stdout.readline())
    assert la.stdout.readline().strip() == "watching"   # the worker's line (it shares the launcher's stdout)
    assert running(pid)
    la.kill()
    la.wait()
    t = time.time()
    while running(pid) and time.time() - t < 20:
        time.sleep(0.1)
    assert not running(pid), "the orphaned worker is still running"
    assert time.time() - t < 5
