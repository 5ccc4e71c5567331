"""Chaos soak of the daemon's delivery promise: every event reaches every sink at least once.

    .venv/bin/python bench/chaos.py [--seconds 120] [--rate 1000] [--seed S] [--catch-up 300]
                                    [--no-copytruncate] [--workdir DIR] [--keep] [-v]

Runs ``python -m auditshipd.cli run -c CONFIG`` with four sinks: ``file`` (a file sink),
``web`` (http, concurrency 2), ``acme`` (http, ``organizations = ["acme"]``) and ``extra``
(http, removed and added again by reloads), the http ones to one receiver in a thread of
this process. A writer process appends events with unique ids at ``--rate`` events/s,
while one loop takes, at random (``--seed``), one action at a time: rotations (rename,
out of the glob, copytruncate, renumbering, deletion of rotated segments, bursts of them),
``kill -9`` (also while the daemon starts, and during a reload), SIGTERM, SIGHUP after an
edit of the config (batch sizes, ``extra``, and at times ``[journal]``: another
``read_block_bytes`` and ``poll_interval``, a second glob that matches nothing, which the
running readers and watcher take), a receiver path answering 503 or hanging, and
"behind": a sink's
destination fails, the segment it reads is rotated and deleted and a reload changes it.

After ``--seconds`` the writer stops, the receiver is healthy, ``extra`` is configured,
and the daemon gets up to ``--catch-up`` seconds to deliver everything; it is stopped
with SIGTERM and each sink is checked: missing ids, duplicates, ids out of its scope. On
a loss the missing ranges, when they were written and the actions around them are
printed and the work directory is kept.

Actions that would lose events whatever the daemon does are not taken (a segment leaves
the glob only while the daemon runs and holds it or has had time to; a stop, a kill or
the removal of ``extra`` waits until the daemon holds no segment the glob no longer
reaches; nothing leaves the glob while ``extra`` is removed), so any missing id is a loss.
bench/README.md ("Chaos") says more.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chaos import ID_RE, FlakyReceiver, JournalOps, event_id, held_segments, org_of  # noqa: E402
from _common import REPO, free_port, print_header, wait_until  # noqa: E402

from auditshipd.testing import DaemonProcess  # noqa: E402

SINKS = ("file", "web", "acme", "extra")
HTTP_PATHS = ("web", "acme", "extra")
GATE_SECONDS = 20.0

# action -> weight
WEIGHTS = {
    "rename": 14, "rename_out": 5, "copytruncate": 10, "renumber": 4, "move_out": 3,
    "delete": 12, "delete_archived": 4,
    "behind": 6, "burst": 4, "kill9": 7, "sigterm": 5, "sighup": 12, "sighup_kill9": 3,
    "trouble_503": 7, "trouble_hang": 5,
}


class Chaos:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.ops = JournalOps(work)
        self.state = work / "state"
        self.out = work / "out" / "file.jsonl"
        self.config = work / "auditshipd.toml"
        self.receiver = FlakyReceiver(free_port(), random.Random(args.seed + 1), work)
        env = {"PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
        self.daemon = DaemonProcess(self.config, work, env=env)
        self.started_at = 0.0  # monotonic time the running daemon said it started; 0: down
        self.down_until = 0.0
        self.batch = {"file": 500, "web": 300, "acme": 100, "extra": 200}
        self.extra_on = True
        # [journal] settings a reload may change: read_block_bytes, poll_interval, and a
        # second glob (in the archive directory, matching nothing) on or off
        self.read_block, self.poll, self.second_glob = 1024 * 1024, 0.5, False
        self.t0 = time.monotonic()
        self.actions: list[tuple[float, str]] = []
        self.counts: Counter[str] = Counter()
        self.writer: Any = None

    # -- log -------------------------------------------------------------------------

    def note(self, text: str, kind: str = "") -> None:
        t = time.monotonic() - self.t0
        self.actions.append((t, text))
        if kind:
            self.counts[kind] += 1
        if self.args.verbose:
            print(f"  {t:7.2f}s {text}", flush=True)

    # -- config ----------------------------------------------------------------------

    def write_config(self) -> None:
        journal = self.ops.path
        http = """
[[sinks]]
name = "{name}"
type = "http"
url = "{url}"
concurrency = {conc}
{extra}
[sinks.batch]
max_events = {batch}
timeout = 0.1
[sinks.retry]
initial_backoff = 0.1
max_backoff = 2.0
attempt_timeout = 5.0
"""
        globs = [f"{journal}*"] + ([str(self.ops.archive / "never-*")] if self.second_glob else [])
        text = f"""shutdown_timeout = 5.0
config_watch = false
[journal]
path = "{journal}"
paths = {json.dumps(globs)}
state_dir = "{self.state}"
rotate_wait = 2.0
poll_interval = {self.poll}
read_block_bytes = {self.read_block}
[metrics]
enabled = false

[[sinks]]
name = "file"
type = "file"
path = "{self.out}"
[sinks.batch]
max_events = {self.batch['file']}
timeout = 0.1
""" + http.format(name="web", url=self.receiver.url("web"), conc=2, extra="",
                          batch=self.batch["web"]) \
            + http.format(name="acme", url=self.receiver.url("acme"), conc=1,
                          extra='organizations = ["acme"]', batch=self.batch["acme"])
        if self.extra_on:
            text += http.format(name="extra", url=self.receiver.url("extra"), conc=1, extra="",
                                batch=self.batch["extra"])
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config)

    # -- the daemon ------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.started_at > 0 and self.daemon.poll() is None

    def start_daemon(self) -> None:
        self.daemon.start()
        self.daemon.wait_started(timeout=90)
        self.started_at = time.monotonic()
        self.note(f"daemon started (pid {self.daemon.proc.pid})", "start")

    def held(self) -> dict[tuple[int, int], str]:
        if not self.up:
            return {}
        return held_segments(self.daemon.proc.pid, [self.ops.dir, self.ops.archive])

    def unreachable_held(self) -> list[str]:
        """The segments the daemon holds open that the glob no longer reaches."""
        reach = self.ops.in_glob()
        return sorted(t for k, t in self.held().items() if k not in reach)

    def gate(self, what: str) -> bool:
        """Wait until the daemon holds no segment out of the glob's reach: stopping it (or
        removing a sink) then drops nothing a sink still needs."""
        deadline = time.monotonic() + GATE_SECONDS
        while True:
            left = self.unreachable_held()
            if not left:
                return True
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                self.note(f"skip {what}: the daemon still holds {left}", "skipped")
                return False
            time.sleep(0.1)

    def kill9(self, gated: bool = True) -> None:
        if gated and not self.gate("kill -9"):
            return
        self.daemon.proc.kill()
        self.daemon.proc.wait(30)
        self.started_at = 0.0
        self.down_until = time.monotonic() + self.rng.uniform(0.0, 3.0)
        self.note("kill -9", "kill9")
        if self.rng.random() < 0.3:  # killed again while starting
            offset = len(self.daemon.log())
            self.daemon.start()
            time.sleep(self.rng.uniform(0.0, 2.0))
            if self.daemon.poll() is None:
                self.daemon.proc.kill()
                self.daemon.proc.wait(30)
                started = b"auditshipd started" in self.daemon.log()[offset:]
                self.note(f"restarted and killed again ({'after' if started else 'before'}"
                          " it said it started)", "kill9_starting")

    def sighup_kill9(self) -> None:
        """A reload interrupted by kill -9 at a random moment."""
        if not self.gate("SIGHUP + kill -9"):
            return
        self.new_batch_sizes(list(self.batch))
        self.write_config()
        offset = len(self.daemon.log())
        self.daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(self.rng.uniform(0.0, 0.5))
        applied = b"config reloaded" in self.daemon.log()[offset:]
        self.note(f"SIGHUP (batches {self.batch}), then kill -9 "
                  f"{'after' if applied else 'before'} the reload was applied", "sighup_kill9")
        self.kill9(gated=False)

    def sigterm(self) -> None:
        if not self.gate("SIGTERM"):
            return
        self.note("SIGTERM sent")
        self.daemon.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.daemon.proc.wait(60)
        except Exception:  # noqa: BLE001 - a stuck stop is a finding, then kill it
            self.note("daemon did not stop within 60 s of SIGTERM: kill -9", "stuck")
            self.daemon.proc.kill()
            rc = self.daemon.proc.wait(30)
        self.started_at = 0.0
        self.down_until = time.monotonic() + self.rng.uniform(0.0, 3.0)
        self.note(f"daemon exited {rc} after SIGTERM", "sigterm")

    def new_batch_sizes(self, names: list[str]) -> None:
        """Other batch sizes for these sinks: a reload restarts their drivers."""
        for name in names:
            self.batch[name] = self.rng.choice(
                [n for n in (20, 50, 100, 250, 500, 1000) if n != self.batch[name]])

    def sighup(self, extra: bool | None = None, change: list[str] | None = None) -> None:
        """Edit the config (batch sizes of ``change``, else of sinks at random; ``extra``
        on or off), SIGHUP, wait until the daemon says it applied it."""
        if extra is None:
            extra = (not self.extra_on) if self.rng.random() < 0.35 else self.extra_on
        if self.extra_on and not extra and not self.gate("removing extra"):
            return
        if change is None:
            change = [name for name in self.batch if self.rng.random() < 0.6]
        self.new_batch_sizes(change)
        journal = self.rng.random() < 0.3  # [journal] changed: reading and every sink restart
        if journal:
            self.read_block = self.rng.choice(
                [n for n in (65536, 262144, 1024 * 1024) if n != self.read_block])
            self.poll = self.rng.choice((0.2, 0.5, 1.0))
            self.second_glob = self.rng.random() < 0.5
        self.extra_on = extra
        self.write_config()
        offset = len(self.daemon.log())
        self.daemon.proc.send_signal(signal.SIGHUP)

        def applied() -> bytes | None:
            tail = self.daemon.log()[offset:]
            for marker in (b"config reloaded", b"config reload rejected"):
                if marker in tail:
                    return marker
            return None

        marker = wait_until(applied, 60, "the reload", interval=0.05,
                            alive=lambda: "daemon exited" if self.daemon.poll() is not None
                            else None)
        self.note(f"SIGHUP: {marker.decode()} (batches {self.batch}, extra "
                  f"{'on' if extra else 'off'}, read_block_bytes {self.read_block}, poll_interval"
                  f" {self.poll}, second glob {'on' if self.second_glob else 'off'})",
                  "sighup_journal" if journal else "sighup")
        if marker != b"config reloaded":
            raise SystemExit("a reload of a valid config was rejected; see daemon.log")

    # -- rotation ----------------------------------------------------------------------

    def may_leave_glob(self, path: Path) -> str | None:
        """Why ``path`` (in the glob) must not leave it now (None: it may): the daemon must
        run with every sink configured, and hold it, or have run long enough to have it."""
        if not self.up:
            return "daemon down"
        if not self.extra_on:
            return "extra removed"
        try:
            st = path.stat()
        except FileNotFoundError:
            return "gone"
        if (st.st_dev, st.st_ino) in self.held():
            return None
        now = time.monotonic()
        named = self.ops.named_at.get(path.name, 0.0)
        if now - self.started_at > 3.0 and now - named > 3.0 and path != self.ops.path:
            return None
        return "not held yet"

    def rotate(self, action: str) -> None:
        ops = self.ops
        if action == "rename":
            self.note(ops.rename(create=self.rng.random() < 0.4, lock=self.rng.random() < 0.5),
                      "rename")
        elif action == "burst":  # rotations back to back: small and empty segments
            for _ in range(self.rng.randint(2, 4)):
                if self.rng.random() < 0.5 and not self.args.no_copytruncate:
                    self.note(ops.copytruncate(), "copytruncate")
                else:
                    self.note(ops.rename(create=self.rng.random() < 0.5), "rename")
                time.sleep(self.rng.uniform(0.0, 0.05))
        elif action == "copytruncate":
            self.note(ops.copytruncate(), "copytruncate")
        elif action == "rename_out":
            why = self.may_leave_glob(ops.path)
            if why is None:
                self.note(ops.rename_out(lock=self.rng.random() < 0.5), "rename_out")
        elif action in ("renumber", "move_out", "delete"):
            segments = ops.rotated()
            if not segments:
                return
            # mostly the oldest, as logrotate does; sometimes the newest (a sink may be
            # behind on it)
            path = segments[0] if self.rng.random() < 0.6 else segments[-1]
            if action == "renumber":
                self.note(ops.renumber(path), "renumber")
                return
            why = self.may_leave_glob(path)
            if why is not None:
                return
            st = path.stat()
            held = "held" if (st.st_dev, st.st_ino) in self.held() else "not held"
            if action == "move_out":
                self.note(ops.archive_segment(path) + f" [{held}]", "move_out")
            else:
                self.note(ops.delete(path, f" [{held}]"), "delete")
        elif action == "delete_archived":
            archived = ops.archived()
            if archived:
                self.note(ops.delete(archived[0]), "delete_archived")

    # -- the loop ----------------------------------------------------------------------

    def trouble(self, mode: str, path: str | None = None) -> str:
        path = path or self.rng.choice(HTTP_PATHS)
        seconds = self.rng.uniform(2, 12) if mode == "503" else self.rng.uniform(2, 9)
        self.receiver.trouble(path, mode, seconds)
        self.note(f"receiver /{path}: {mode} for {seconds:.1f}s", f"trouble_{mode}")
        return path

    def behind(self) -> None:
        """A sink falls behind, the segment it is behind on is rotated away and deleted
        at once, and (mostly) a reload restarts that sink's driver."""
        path = self.trouble(self.rng.choice(["503", "hang"]))
        time.sleep(self.rng.uniform(0.2, 1.5))
        self.rotate("rename" if self.args.no_copytruncate or self.rng.random() < 0.5
                    else "copytruncate")
        time.sleep(self.rng.uniform(0.0, 0.5))
        segments = self.ops.rotated()
        if segments and self.may_leave_glob(segments[-1]) is None:
            self.note(self.ops.delete(segments[-1], " [behind]"), "delete")
        if self.up and (path != "extra" or self.extra_on) and self.rng.random() < 0.7:
            self.sighup(extra=self.extra_on, change=[path])

    def step(self) -> None:
        action = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        if action == "copytruncate" and self.args.no_copytruncate:
            action = "rename"
        if action.startswith("trouble_"):
            self.trouble(action[len("trouble_"):])
        elif action == "behind":
            if self.up:
                self.behind()
        elif action in ("kill9", "sigterm", "sighup", "sighup_kill9"):
            if self.up:
                getattr(self, action)()
        else:
            self.rotate(action)

    def run(self) -> int:
        self.receiver.start()
        self.write_config()
        log = open(self.work / "writer.log", "w")  # noqa: SIM115 - open for the writer's life
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        self.writer = subprocess.Popen(
            [sys.executable, __file__, "_writer", str(self.ops.path), str(self.args.rate)],
            stdout=log, env=env, start_new_session=True)
        self.start_daemon()
        end = self.t0 + self.args.seconds
        try:
            while time.monotonic() < end:
                if not self.up and time.monotonic() >= self.down_until:
                    if self.daemon.poll() is not None and self.started_at:
                        self.note(f"daemon died by itself: rc {self.daemon.poll()}", "died")
                    self.start_daemon()
                self.step()
                time.sleep(self.rng.uniform(0.1, 1.5))
            self.writer.send_signal(signal.SIGTERM)
            self.writer.wait(60)
            log.close()
            self.note("writer stopped")
            return self.finish()
        finally:
            if self.writer.poll() is None:
                self.writer.kill()
            if self.daemon.poll() is None:
                self.daemon.proc.kill()
            self.receiver.stop()

    # -- the check ---------------------------------------------------------------------

    def written(self) -> tuple[int, set[int], list[tuple[float, int]]]:
        total, failed, progress = -1, set(), []
        for line in (self.work / "writer.log").read_text().splitlines():
            a, b = line.split()
            if a == "done":
                total = int(b)
            elif a == "fail":
                failed.add(int(b))
            else:
                progress.append((float(a), int(b)))
        if total < 0:
            raise SystemExit("the writer did not finish; see writer.log")
        return total, failed, progress

    def expected(self, total: int, failed: set[int]) -> dict[str, set[str]]:
        every = {event_id(i) for i in range(total) if i not in failed}
        acme = {event_id(i) for i in range(total) if i not in failed and org_of(i) == "acme"}
        return {"file": every, "web": every, "acme": acme, "extra": every}

    def received(self) -> dict[str, Counter[str]]:
        got = {p: self.receiver.snapshot(p) for p in HTTP_PATHS}
        try:
            data = self.out.read_bytes()
        except FileNotFoundError:
            data = b""
        got["file"] = Counter(m.decode() for m in ID_RE.findall(data))
        return got

    def finish(self) -> int:
        total, failed, progress = self.written()
        expected = self.expected(total, failed)
        self.receiver.healthy()
        if not self.up:
            self.start_daemon()
        if not self.extra_on:
            self.sighup(extra=True)
        self.note("catching up (receiver healthy)")

        def caught_up() -> bool:
            file_ids = self.received()["file"]
            return all(expected[s] <= (set(file_ids) if s == "file"
                                       else self.receiver.distinct(s)) for s in SINKS)

        try:
            wait_until(caught_up, self.args.catch_up, "every sink to catch up", interval=1.0,
                       alive=lambda: "daemon exited" if self.daemon.poll() is not None
                       else None)
            self.note("every sink has every event")
        except Exception as exc:  # noqa: BLE001 - reported below with what is missing
            self.note(f"catch-up ended: {exc}")
        rc = self.daemon.terminate(timeout=60)
        self.note(f"daemon stopped (rc {rc})")
        return self.report(total, failed, progress, expected)

    def report(self, total: int, failed: set[int], progress: list[tuple[float, int]],
               expected: dict[str, set[str]]) -> int:
        got = self.received()
        lost = False
        span = progress[-1][0] - progress[0][0] if len(progress) > 1 else 0.0
        print(f"\nevents written: {total:,} ({len(failed)} records failed) in {span:.0f} s, "
              f"{total / span if span else 0:,.0f}/s; actions: "
              + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))
        print(f"receiver answers: {dict(self.receiver.answers)}")
        print(f"\n{'sink':<6} {'expected':>9} {'delivered':>9} {'missing':>8} "
              f"{'duplicates':>10} {'out of scope':>12}")
        missing_by: dict[str, list[int]] = {}
        for sink in SINKS:
            counts = got[sink]
            ours = {i: c for i, c in counts.items() if i.startswith("e")}
            want = expected[sink]
            missing = sorted(int(i[1:]) for i in want - ours.keys())
            dups = sum(c - 1 for i, c in ours.items() if i in want)
            foreign = sum(1 for i in ours if i not in want)
            print(f"{sink:<6} {len(want):>9,} {len(want & ours.keys()):>9,} {len(missing):>8,} "
                  f"{dups:>10,} {foreign:>12,}")
            if missing or foreign:
                lost = True
                missing_by[sink] = missing
        errors = [x for x in self.daemon.log().decode(errors="replace").splitlines()
                  if " ERROR " in x or "Traceback" in x]
        print(f"\ndaemon log: {len(errors)} error line(s)"
              + "".join(f"\n  {x[:300]}" for x in errors[:15]))
        if not lost:
            print("\nno loss")
            return 0
        self.explain(missing_by, progress)
        return 1

    def explain(self, missing_by: dict[str, list[int]], progress: list[tuple[float, int]]) -> None:
        start_wall = time.time() - (time.monotonic() - self.t0)

        def written_at(seq: int) -> float:
            for t, n in progress:
                if n > seq:
                    return t - start_wall
            return float("nan")

        kept = self.kept_ids()
        windows: list[tuple[float, float]] = []
        for sink, missing in missing_by.items():
            print(f"\nLOSS at sink {sink}: {len(missing)} id(s) missing"
                  f" ({sum(1 for m in missing if event_id(m) in kept.get(sink, ()))} of them in"
                  f" its dead letters or quarantine)")
            ranges: list[list[int]] = []
            for m in missing:
                if ranges and m - ranges[-1][1] <= 10:
                    ranges[-1][1] = m
                else:
                    ranges.append([m, m])
            for a, b in ranges[:40]:
                ta, tb = written_at(a), written_at(b)
                windows.append((ta, tb))
                print(f"  {event_id(a)}..{event_id(b)} written at {ta:.2f}s..{tb:.2f}s")
            if len(ranges) > 40:
                print(f"  ... {len(ranges) - 40} more ranges")
        print("\nchaos actions (time since start):")
        for t, text in self.actions:
            near = any(a - 15 <= t <= b + 15 for a, b in windows)
            print(f"{'>' if near else ' '} {t:8.2f}s {text}")
        print(f"\nwork directory kept: {self.work}")
        self.args.keep = True

    def kept_ids(self) -> dict[str, set[str]]:
        """The ids in each sink's dead-letter and quarantine files."""
        out: dict[str, set[str]] = {}
        for path in self.state.rglob("*"):
            if path.is_file() and ("dead" in str(path) or "quarantine" in str(path)):
                ids = {m.decode() for m in ID_RE.findall(path.read_bytes())}
                out.setdefault(path.stem, set()).update(ids)
        return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_writer"]:
        from _chaos import run_writer
        return run_writer(argv[1], float(argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="chaos duration (default 120)")
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s written (default 1000)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--catch-up", type=float, default=300.0,
                    help="seconds the daemon gets to deliver everything at the end (default 300)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where to make the work directory (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--no-copytruncate", action="store_true",
                    help="rotate by renaming only (no copytruncate)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each action as it happens")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    print_header()
    print(f"seed {args.seed}, {args.seconds:.0f} s at {args.rate:.0f} events/s")
    work = Path(tempfile.mkdtemp(prefix="auditshipd-chaos-", dir=args.workdir))
    print(f"work directory: {work}", flush=True)
    chaos = Chaos(args, work)
    rc = 1
    try:
        rc = chaos.run()
    finally:
        if args.keep or rc != 0:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
