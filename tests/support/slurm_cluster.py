"""A real one-node Slurm cluster on this machine, for the tests (Debian's ``slurm-wlm`` and ``munge``).

``Cluster(max_array_size=4)`` as a context manager starts, as root, a ``munged`` with a fresh
key, a ``slurmctld`` and a ``slurmd`` (``ProctrackType=proctrack/linuxproc``,
``TaskPlugin=task/none``, ``SelectType=select/cons_tres``, one node with ``CPUs=2``), all in
the foreground with their configuration, state, spool and logs in a temporary folder and on
free ports; it stops them by PID at the end. ``env`` is the environment under which the Slurm
commands talk to it (``SLURM_CONF``).

Without the programs (or as another user than root) the tests skip, naming the install
command; with ``ADATAMW_REQUIRE_SLURM=1`` (``.ci/run`` sets it) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port

REQUIRE_ENV = "ADATAMW_REQUIRE_SLURM"
INSTALL_HINT = "apt-get update && apt-get install -y slurm-wlm munge"
PROGRAMS = ("sbatch", "squeue", "scontrol", "scancel", "slurmctld", "slurmd", "munged", "mungekey")


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [
        p for p in PROGRAMS if shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
    ]
    if missing:
        return f"no {', '.join(missing)} on this machine"
    if os.geteuid() != 0:
        return "the test cluster's slurmctld and slurmd run as root; this is not root"
    return None


def require() -> None:
    """Skip the calling test (or fail it, under ADATAMW_REQUIRE_SLURM=1) when no cluster can be started."""
    reason = unavailable()
    if reason is None:
        return
    message = f"real-Slurm tests: {reason}; install with `{INSTALL_HINT}` (as root)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}. {REQUIRE_ENV}=1 requires these tests to run.", pytrace=False)
    pytest.skip(message)


def _sbin(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


class ClusterError(RuntimeError):
    pass


class Cluster:
    """One node, ``cpus`` CPUs, ``MaxArraySize`` as given (None: Slurm's default 1001)."""

    def __init__(self, max_array_size: int | None = None, cpus: int = 2):
        self.max_array_size, self.cpus = max_array_size, cpus
        self.root = Path(tempfile.mkdtemp(prefix="adatamw-slurm-"))
        self.root.chmod(0o755)  # munged wants its socket folder reachable by all
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: dict[str, subprocess.Popen] = {}

    # ---- life cycle -------------------------------------------------------------------

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for sub in ("munge", "socket", "state", "spool", "log"):
            (self.root / sub).mkdir()
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        subprocess.run(
            [_sbin("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True
        )
        self.socket = self.root / "socket" / "munge.socket"
        self._daemon(
            "munged",
            [
                _sbin("munged"),
                "--foreground",
                f"--key-file={key}",
                f"--socket={self.socket}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
        )
        self._wait(lambda: self.socket.exists(), 30, "munged did not create its socket")
        self.write_config(self.max_array_size)
        self._daemon("slurmctld", [_sbin("slurmctld"), "-D", "-f", str(self.conf)])
        self._daemon("slurmd", [_sbin("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._node_idle, 90, "the node did not become idle")

    def write_config(self, max_array_size: int | None) -> None:
        r = self.root
        self.ports = (free_port(), free_port())
        lines = [
            "ClusterName=adatamwtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={self.ports[0]}",
            f"SlurmdPort={self.ports[1]}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SchedulerType=sched/backfill",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "MinJobAge=3600",  # finished jobs stay visible to `scontrol show job`
            *([f"MaxArraySize={max_array_size}"] if max_array_size is not None else []),
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged by their PIDs."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True, timeout=30)
            try:
                self._wait(lambda: not self.queue(), 60, "jobs still queued")
            except ClusterError:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def as_default(self):
        """Within: this process's Slurm commands talk to this cluster.

        That is the ``scontrol`` run by the code under test.
        """
        previous = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(self.conf)
        try:
            yield self
        finally:
            if previous is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous

    # ---- commands ---------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        env: dict | None = None,
        timeout: float = 60,
        check: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            argv,
            env={**(env or self.env), "SLURM_CONF": str(self.conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}\n{self.logs()}"
            )
        return proc

    def sbatch(
        self, *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 60
    ) -> int:
        """Submit; the job id."""
        proc = self.run(["sbatch", "--parsable", *args], env=env, cwd=cwd, timeout=timeout)
        return int(proc.stdout.strip().split(";")[0])

    def queue(self) -> list[str]:
        proc = self.run(["squeue", "--noheader", "--format=%i %T"], check=False)
        return proc.stdout.split("\n") if proc.stdout.strip() else []

    def job_states(self, job_id: int) -> dict[str, str]:
        """Array task id (or job id) -> JobState, from ``scontrol show job``."""
        out = self.run(["scontrol", "--oneliner", "show", "job", str(job_id)]).stdout
        states = {}
        for line in out.splitlines():
            task = re.search(r"\bArrayTaskId=(\S+)", line)
            state = re.search(r"\bJobState=(\S+)", line)
            if state:
                states[task.group(1) if task else str(job_id)] = state.group(1)
        return states

    def wait(self, job_id: int, timeout: float) -> dict[str, str]:
        """Wait until no task of ``job_id`` is pending or running (bounded); their final states."""

        def done():
            states = self.job_states(job_id)
            return states and not any(
                s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for s in states.values()
            )

        self._wait(done, timeout, f"job {job_id} did not finish")
        return self.job_states(job_id)

    def max_array_size_now(self) -> int | None:
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", self.run(["scontrol", "show", "config"]).stdout, re.M)
        return int(match.group(1)) if match else None

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(
                f"--- {path.name} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
            )
        for name, proc in self.daemons.items():
            if proc.poll() is not None:
                parts.append(f"--- {name} exited {proc.returncode}")
        return "\n".join(parts)

    # ---- helpers ----------------------------------------------------------------------

    def _daemon(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "w")
        self.daemons[name] = subprocess.Popen(
            argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def _node_idle(self) -> bool:
        proc = self.run(["scontrol", "--oneliner", "show", "node", self.node], check=False)
        return proc.returncode == 0 and re.search(r"\bState=IDLE\b", proc.stdout) is not None

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited {proc.returncode}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise ClusterError(f"{what} within {timeout:g} s\n{self.logs()}")


def script_commands(text: str) -> list[list[str]]:
    """The argv of every command of an array script written by ``common/slurm.py``."""
    body = text[text.index("COMMANDS=(\n") + len("COMMANDS=(\n") : text.index("\n)\n")]
    return [shlex.split(shlex.split(line)[0]) for line in body.splitlines()]


class OneAtATime:
    """At most one running cluster, restarted when a test asks for another MaxArraySize (changing it
    with ``scontrol reconfigure`` is not reliable once jobs were submitted: slurmctld 22.05 went on
    refusing arrays by the old limit)."""

    def __init__(self):
        self.current: Cluster | None = None

    def get(self, max_array_size: int | None) -> Cluster:
        if self.current is not None and self.current.max_array_size != max_array_size:
            self.close()
        if self.current is None:
            self.current = Cluster(max_array_size).__enter__()
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None
