"""The parts of bench/chaos.py: the event writer, the journal operations of a log
rotator, what the daemon holds open, and a receiver that misbehaves on demand.

Event ``i`` has the id ``e%08d`` and the organization ``ORG_OF[i % 10]`` (None: no
organization), so the checker knows every sink's share from the ids alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import random
import re
import shutil
import signal
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec

from auditshipd.durable import file_lock
from auditshipd.testing import ThreadedHttpServer

__all__ = [
    "ID_RE",
    "ORG_OF",
    "FlakyReceiver",
    "JournalOps",
    "event_id",
    "held_segments",
    "org_of",
    "run_writer",
]

ORG_OF = ("acme", "acme", "acme", "globex", "globex", "initech", None, "acme", None, "umbrella")
ID_RE = re.compile(rb'"id":"(e\d{8})"')


def event_id(seq: int) -> str:
    return f"e{seq:08d}"


def org_of(seq: int) -> str | None:
    return ORG_OF[seq % len(ORG_OF)]


# -- the writer (a process of its own) --------------------------------------------------

def run_writer(journal: str, rate: float) -> int:
    """Append events ``e00000000``, ``e00000001``... with ``AuditJournal`` at ``rate``
    events/s until SIGTERM. Prints ``<unix time> <events written>`` every 0.1 s, ``fail
    <seq>`` for a record that returned False, and ``done <events>`` at the end."""
    from auditshipd import AuditJournal

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    j = AuditJournal(journal)
    out = sys.stdout
    start = time.monotonic()
    seq = 0
    next_report = 0.0
    while not stop:
        now = time.monotonic()
        due = int((now - start) * rate)
        while seq < due and not stop:
            org = org_of(seq)
            ok = j.record(
                "user.provisioned", id=event_id(seq),
                actor={"type": "user", "email": f"admin{seq % 7}@example.test", "name": "Ada"},
                targets=[{"type": "user", "email": f"u{seq}@example.test"}],
                organization={"slug": org} if org else None,
                metadata={"seq": seq, "t": round(time.time(), 3)})
            if not ok:
                out.write(f"fail {seq}\n")
            seq += 1
        if now >= next_report:
            out.write(f"{time.time():.3f} {seq}\n")
            out.flush()
            next_report = now + 0.1
        time.sleep(0.005)
    j.close()
    out.write(f"{time.time():.3f} {seq}\ndone {seq}\n")
    out.flush()
    return 0


# -- the journal, as a log rotator sees it ------------------------------------------------

def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def edge_ids(path: Path) -> tuple[str, str]:
    """The first and last event ids of a journal file ("" when none)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            tail = f.read()
    except OSError:
        return "", ""
    first = ID_RE.search(head)
    last = ID_RE.findall(tail)
    return (first.group(1).decode() if first else "", last[-1].decode() if last else "")


class JournalOps:
    """What logrotate does to ``DIR/journal/audit.jsonl`` (glob ``audit.jsonl*``), a copy
    and its truncation under the writers' ``flock`` (no record lands between them, which
    would be lost whoever reads the journal), renames with it or without it: rename,
    rename out of the glob, copytruncate, renumbering and deletion of rotated segments."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "journal"
        self.archive = root / "archive"  # outside the glob, same file system
        self.path = self.dir / "audit.jsonl"
        self.lock_path = self.dir / ".audit.jsonl.lock"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.archive.mkdir(exist_ok=True)
        self.n = 0
        self.named_at: dict[str, float] = {}  # segment name -> when it got that name

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with file_lock(self.lock_path, 0o640):
            yield

    def _new_name(self) -> Path:
        self.n += 1
        return self.path.with_name(f"audit.jsonl.{self.n}")

    def in_glob(self) -> dict[tuple[int, int], Path]:
        """(dev, inode) -> path of every regular file the daemon's glob reaches."""
        out = {}
        for p in self.dir.glob("audit.jsonl*"):
            with contextlib.suppress(OSError):
                st = p.lstat()
                if stat.S_ISREG(st.st_mode):
                    out[_key(st)] = p
        return out

    def rotated(self) -> list[Path]:
        """The rotated segments in the glob, oldest first."""
        def num(p: Path) -> int:
            return int(p.name.rsplit(".", 1)[1])
        return sorted((p for p in self.dir.glob("audit.jsonl.*") if p.name[12:].isdigit()),
                      key=num)

    def archived(self) -> list[Path]:
        return sorted(self.archive.iterdir())

    def _describe(self, path: Path) -> str:
        first, last = edge_ids(path)
        size = path.stat().st_size if path.exists() else 0
        return f"{size} bytes, ids {first or '-'}..{last or '-'}"

    def rename(self, create: bool, lock: bool = True) -> str:
        """``lock=False`` as logrotate does: a writer that looked at the name just before
        may append one more record to the renamed file."""
        with self.locked() if lock else contextlib.nullcontext():
            if not self.path.exists():
                return "rename: no active file"
            target = self._new_name()
            os.rename(self.path, target)
            self.named_at[target.name] = time.monotonic()
            if create:
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        how = ("+create" if create else "") + ("" if lock else " (unlocked)")
        return f"rename{how} audit.jsonl -> {target.name} ({self._describe(target)})"

    def rename_out(self, lock: bool = True) -> str:
        with self.locked() if lock else contextlib.nullcontext():
            if not self.path.exists():
                return "rename out of the glob: no active file"
            self.n += 1
            target = self.archive / f"old-audit.{self.n}"
            os.rename(self.path, target)
        time.sleep(0.01)  # a record that went there after all is in the description
        return (f"rename{'' if lock else ' (unlocked)'} audit.jsonl -> archive/{target.name} "
                f"({self._describe(target)})")

    def copytruncate(self) -> str:
        with self.locked():
            if not self.path.exists():
                return "copytruncate: no active file"
            target = self._new_name()
            shutil.copyfile(self.path, target)
            os.truncate(self.path, 0)
            self.named_at[target.name] = time.monotonic()
            return f"copytruncate audit.jsonl -> {target.name} ({self._describe(target)})"

    def renumber(self, path: Path) -> str:
        """A rotated segment renamed to another name in the glob (logrotate's .1 -> .2)."""
        target = self._new_name()
        os.rename(path, target)
        self.named_at.pop(path.name, None)
        self.named_at[target.name] = time.monotonic()
        return f"renumber {path.name} -> {target.name} ({self._describe(target)})"

    def archive_segment(self, path: Path) -> str:
        """A rotated segment moved out of the glob (archived elsewhere)."""
        desc = self._describe(path)
        target = self.archive / f"moved-{path.name}"
        os.rename(path, target)
        self.named_at.pop(path.name, None)
        return f"move {path.name} -> archive/{target.name} ({desc})"

    def delete(self, path: Path, note: str = "") -> str:
        desc = self._describe(path)
        path.unlink()
        self.named_at.pop(path.name, None)
        where = "archive/" if path.parent == self.archive else ""
        return f"delete {where}{path.name} ({desc}){note}"


def held_segments(pid: int, roots: list[Path]) -> dict[tuple[int, int], str]:
    """(dev, inode) -> link text of the regular files under ``roots`` that process
    ``pid`` holds open read-only (the journal readers' descriptors; the daemon's own
    journal writer opens for writing and is left out)."""
    out: dict[tuple[int, int], str] = {}
    prefixes = tuple(str(r) + os.sep for r in roots)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if not target.startswith(prefixes):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = next(int(x.split()[1], 8) for x in f if x.startswith("flags:"))
            if flags & os.O_ACCMODE != os.O_RDONLY:
                continue
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except (OSError, StopIteration, ValueError):
            continue
        if stat.S_ISREG(st.st_mode):
            out[_key(st)] = target
    return out


# -- the receiver ---------------------------------------------------------------------------

class _Id(msgspec.Struct):
    id: str = ""


class FlakyReceiver(ThreadedHttpServer):
    """An aiohttp server in a thread: ``POST /<path>`` takes a JSON array (or NDJSON) of
    events and counts their ids per path, only when it answers 200 to a client still
    connected. ``trouble(path, "503", s)``: for ``s`` seconds most requests to ``path``
    get 503 (some with ``Retry-After: 1``); ``trouble(path, "hang", s)``: requests wait
    until the window ends before they are answered (longer than the sink's
    ``attempt_timeout``: the sink times out and sends again)."""

    client_max_size = 256 * 1024 * 1024

    def __init__(self, port: int, rng: random.Random, record_dir: Path) -> None:
        super().__init__(port)
        self.rng = rng
        # every accepted request's ids, one line per request: "<unix time> <path> <ids>"
        record_dir.mkdir(parents=True, exist_ok=True)
        self.record = open(record_dir / "received.log", "a", buffering=1)  # noqa: SIM115
        self.counts: dict[str, Counter[str]] = {}
        self.answers: Counter[str] = Counter()
        self._trouble: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._decode = msgspec.json.Decoder(list[_Id])
        self._decode_line = msgspec.json.Decoder(_Id)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def trouble(self, path: str, mode: str, seconds: float) -> None:
        with self._lock:
            self._trouble[path] = (mode, time.monotonic() + seconds)

    def healthy(self) -> None:
        with self._lock:
            self._trouble.clear()

    def snapshot(self, path: str) -> Counter[str]:
        with self._lock:
            return Counter(self.counts.get(path, ()))

    def distinct(self, path: str) -> set[str]:
        with self._lock:
            return set(self.counts.get(path, ()))

    def stop(self) -> None:
        super().stop()
        self.record.close()

    def routes(self, app) -> None:  # type: ignore[no-untyped-def]
        app.router.add_post("/{path}", self._handle)

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        from aiohttp import web

        path = request.match_info["path"]
        body = await request.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        with self._lock:
            mode, until = self._trouble.get(path, ("", 0.0))
        now = time.monotonic()
        if mode == "503" and now < until and self.rng.random() < 0.8:
            self.answers["503"] += 1
            headers = {"Retry-After": "1"} if self.rng.random() < 0.3 else {}
            return web.Response(status=503, headers=headers, text="busy")
        if mode == "hang" and now < until:
            self.answers["hang"] += 1
            await asyncio.sleep(until - now)
        if request.transport is None or request.transport.is_closing():
            self.answers["gone"] += 1  # the client gave up: not accepted
            return web.Response(status=500)
        try:
            if body[:1] == b"[":
                ids = [e.id for e in self._decode.decode(body)]
            else:
                ids = [e.id for e in self._decode_line.decode_lines(body)]
        except msgspec.DecodeError as exc:
            self.answers["400"] += 1
            return web.Response(status=400, text=f"bad body: {exc}")
        with self._lock:
            self.counts.setdefault(path, Counter()).update(ids)
            self.record.write(f"{time.time():.3f} {path} {' '.join(ids)}\n")
        self.answers["200"] += 1
        return web.Response(body=b"{}", content_type="application/json")
