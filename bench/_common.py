"""Shared helpers for the bench/ scripts: processes, /proc sampling, configs, deadlines.

Nothing here talks to anything but 127.0.0.1. Every wait is bounded and fails with a
clear message (:class:`BenchTimeout`).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditshipd.testing import free_port

__all__ = [
    "BENCH_DIR",
    "REPO",
    "BenchTimeout",
    "Daemon",
    "Receiver",
    "cpu_seconds",
    "cpu_split",
    "free_port",
    "machine_info",
    "median",
    "print_header",
    "proc_status_kb",
    "src_state",
    "wait_until",
    "write_config",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchTimeout(RuntimeError):
    """A benchmark step did not finish in time."""


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.02,
               alive: Callable[[], str | None] | None = None) -> Any:
    """Poll ``cond`` until truthy; BenchTimeout after ``timeout`` s. ``alive`` returns an
    error message when a process we depend on died (checked each round)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if alive is not None:
            problem = alive()
            if problem:
                raise BenchTimeout(f"while waiting for {what}: {problem}")
        if time.monotonic() > deadline:
            raise BenchTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- /proc ----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime = field 14, stime = field 15
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` value from /proc/PID/status (VmRSS, VmHWM...); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def machine_info() -> dict[str, str]:
    model = "?"
    mem_kb = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def src_state() -> str:
    """The code measured: HEAD and any uncommitted change under src/ (the working tree is
    shared, so figures belong to that state, not only to a commit)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git unavailable)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"HEAD {head}" + (f" + uncommitted {', '.join(changed)}" if changed else " (clean)")


def print_header() -> None:
    """The machine and the code a run measured: the first lines of every benchmark."""
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, Python "
          f"{info['python']}, load {info['load']}")
    print(f"src: {src_state()}")


# -- config ---------------------------------------------------------------------------

def write_config(path: Path, journal_dir: Path, state_dir: Path, sink: dict[str, Any],
                 extra: str = "") -> Path:
    """A daemon config: journal ``journal_dir/audit.jsonl*``, one sink, no [redaction]
    table (the default policy), default batch settings unless ``sink`` says otherwise."""
    lines = [
        "shutdown_timeout = 10.0",
        "[journal]",
        f"path = {json.dumps(str(journal_dir / 'audit.jsonl'))}",
        f"paths = [{json.dumps(str(journal_dir / 'audit.jsonl') + '*')}]",
        f"state_dir = {json.dumps(str(state_dir))}",
        extra,
        "[[sinks]]",
    ]
    for key, value in sink.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


# -- processes --------------------------------------------------------------------------

class Receiver:
    """bench/receiver.py in its own process."""

    def __init__(self, port: int | None = None, *, latency: bool = False, log: Path | None = None):
        self.port = port or free_port()
        self.latency = latency
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def start(self, timeout: float = 20.0) -> Receiver:
        cmd = [sys.executable, str(BENCH_DIR / "receiver.py"), "--port", str(self.port)]
        if self.latency:
            cmd.append("--latency")
        log = self.log or Path(os.devnull)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
        wait_until(lambda: self._try_stats() is not None, timeout, "the receiver to listen",
                   interval=0.05, alive=self.problem)
        return self

    def problem(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"receiver exited with {self.proc.returncode}"
        return None

    def _get(self, path: str, timeout: float = 10.0) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.read()

    def _try_stats(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._get("/count", 2.0))
        except OSError:
            return None

    def stats(self) -> dict[str, Any]:
        """{"count", "requests", "bytes", "first_ns", "last_ns"}"""
        return json.loads(self._get("/count"))

    def count(self) -> int:
        return int(self.stats()["count"])

    def reset(self) -> None:
        self._get("/reset")

    def latencies_ns(self) -> list[int]:
        return json.loads(self._get("/latency", 60.0))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Daemon:
    """``python -m auditshipd.cli run -c CONFIG`` (optionally under cProfile)."""

    def __init__(self, config: Path, cwd: Path, *, profile: Path | None = None):
        self.config = config
        self.cwd = cwd
        self.log_path = cwd / "daemon.log"
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_ns = 0

    def start(self) -> Daemon:
        cmd = [sys.executable]
        if self.profile is not None:
            cmd += ["-m", "cProfile", "-o", str(self.profile)]
        cmd += ["-m", "auditshipd.cli", "run", "-c", str(self.config)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        src = str(REPO / "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(self.log_path, "ab") as log:
            self.start_ns = time.time_ns()
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log, stderr=log,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def problem(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_tail()
            return f"daemon exited with {self.proc.returncode}; log tail:\n{tail}"
        return None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_started(self, timeout: float = 30.0) -> None:
        wait_until(lambda: b"auditshipd started" in self.log_path.read_bytes()
                   if self.log_path.exists() else False,
                   timeout, "the daemon to start", interval=0.02, alive=self.problem)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def hwm_mb(self) -> float:
        return proc_status_kb(self.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmRSS") / 1024

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  ! daemon did not exit within {timeout:.0f}s of SIGTERM; killing it",
                  file=sys.stderr)
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
