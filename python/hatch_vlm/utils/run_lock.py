"""One writer per run directory, whatever launched it.

Two jobs writing one run directory (a second `hatch-vlm train` with the same output_dir; two "nodes" of a
launch that each believe they are alone) overwrite each other's checkpoints and state and may both exit 0.
The writer (rank 0) holds `<run dir>/.hatch-lock`: {host, pid, the process's start time, command, since}. A
second writer stops at start naming the holder. A lock left by a process that is gone -- the same host, and
no process with that pid and start time -- is taken over, and said so. A lock from another host cannot be
checked from here: the message says how to clear it once that job is known to be dead.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

from .config import ConfigError

LOCK_NAME = ".hatch-lock"
_HELD: dict[Path, dict] = {}


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), None if there is no
    such process. Tells a live holder from a new process that reuses a dead holder's pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    if Path("/proc").is_dir():
        now = _start_time(pid)
        return now is not None and (started is None or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
            "command": " ".join(sys.argv)[:500], "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _describe(h: dict) -> str:
    return f"pid {h.get('pid')} on host {h.get('host')} since {h.get('since')} ({h.get('command')!r})"


def acquire(run_dir: str | Path, say=print) -> Path:
    """Takes the run directory's lock for this process (again: a no-op); returns the lock file.

    Raises ConfigError naming the holder when another live process (or another host) holds it."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    if path in _HELD:
        return path
    run_dir.mkdir(parents=True, exist_ok=True)
    me = _me()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _ours_or_stale(path, run_dir, me, say):
                break
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise ConfigError(f"output_dir: could not take the lock {path} (another process keeps taking it)")
    _HELD[path] = me
    return path


def _ours_or_stale(path: Path, run_dir: Path, me: dict, say) -> bool:
    """For an existing lock: True if it is this process's; removes a dead holder's (False: try again);
    raises ConfigError naming a live holder or one on another host."""
    holder = _read(path)
    if holder is None:                  # being written right now, or torn: look again
        time.sleep(0.2)
        holder = _read(path)
    if holder is not None and holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
        return True
    if holder is not None and holder.get("host") != me["host"]:
        raise ConfigError(
            f"output_dir: {run_dir} is being written by {_describe(holder)}: one writer per run directory. "
            f"Stop that job or choose another output_dir; if it is known to be dead, delete {path}")
    if holder is not None and _alive(int(holder.get("pid", -1)), holder.get("started")):
        raise ConfigError(
            f"output_dir: {run_dir} is being written by {_describe(holder)}: one writer per run directory. "
            "Wait for it, stop it, or choose another output_dir")
    say(f"run directory: the lock of {_describe(holder or {})}, a process that is gone, taken over")
    path.unlink(missing_ok=True)
    return False


def release(run_dir: str | Path) -> None:
    path = Path(run_dir) / LOCK_NAME
    if _HELD.pop(path, None) is not None:
        holder = _read(path)
        if holder and holder.get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release(path.parent)
