"""Kernel file locks (``filelock``): :func:`hold`, one process at a time per lr run and per sweep
cell (refused, naming the owner, when taken); :func:`wait_for`, a short read-modify-write of a
shared file (waits its turn).

The lock is an OS lock (``flock``) on a hidden file beside the folder it guards, so the kernel
releases it when its holder exits in any way, ``kill -9`` included: a lock left by a dead
process never blocks a re-run. Next to it, ``<lock>.owner.json`` names the holder (PID, host,
start time, command) for the refusal message; an owner note whose PID is no longer running is
stale and only reported as such.

    with hold(output_dir / ".lr_5e-05.lock", "lr run output/lr_5e-05"):
        ...  # train
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout


def _owner_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner.json")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _refusal(lock_path: Path, what: str) -> str:
    owner = {}
    with contextlib.suppress(OSError, ValueError):
        owner = json.loads(_owner_path(lock_path).read_text(encoding="utf-8"))
    pid, host = owner.get("pid"), owner.get("host")
    if pid is None:
        holder = "another process"
    elif host == socket.gethostname() and not _pid_running(int(pid)):
        holder = f"a child of PID {pid} (PID {pid} itself has exited)"
    else:
        holder = f"PID {pid} on {host} (since {owner.get('since', '?')}: {owner.get('command', '?')})"
    return (
        f"{what} is in use by {holder}; lock {lock_path}. Two processes must not train the same run: "
        f"wait for it to finish, or stop it{f' (kill {pid})' if pid else ''} and re-run (a stopped run "
        "resumes from its last checkpoint)."
    )


@contextlib.contextmanager
def hold(lock_path: str | os.PathLike, what: str):
    """Hold the lock at ``lock_path`` for the ``with`` block.

    SystemExit naming the holder when it is taken.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SystemExit(_refusal(lock_path, what)) from None
    owner = _owner_path(lock_path)
    try:
        note = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500],
        }
        owner.write_text(json.dumps(note) + "\n", encoding="utf-8")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def wait_for(lock_path: str | os.PathLike):
    """Hold the lock at ``lock_path`` for the ``with`` block, waiting while another process
    holds it (for a short read-modify-write of a file that several processes update)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        yield
