"""`verify` on what a file sink with ``rotate_bytes`` leaves behind: the rotated files
(``PATH.<UTC time>``, some gzipped since) are read oldest first, then ``PATH``, the file
being written, whether verify is given the directory or the files in name order."""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from pathlib import Path

from tests.helpers.integrity_stream import build_stream

from auditshipd.delivery.batch import Batch
from auditshipd.integrity.keys import generate_key
from auditshipd.integrity.sources import list_inputs, rotation_order
from auditshipd.plugin import SinkContext
from auditshipd.sinks.file import FileOptions, FileSink
from auditshipd.timestamps import epoch_rfc3339

EXE = str(Path(sys.executable).parent / "auditshipd")


async def rotated_output(tmp_path: Path) -> tuple[Path, str, float]:
    """A signed stream written by the file sink in batches of 3 lines, rotating at 3000
    bytes: (the output directory, the public key file, when to verify)."""
    key = generate_key(tmp_path / "k")
    built = build_stream(key, 30, digest_events=4)
    out = tmp_path / "out"
    ctx = SinkContext(name="siem", state_dir=tmp_path, logger=logging.getLogger("test"))
    sink = FileSink("siem", FileOptions(path=str(out / "siem.jsonl"), rotate_bytes=3000), ctx)
    await sink.start()
    for i in range(0, len(built.lines), 3):
        await sink.send(Batch(lines=built.lines[i:i + 3]))
    await sink.close()
    return out, f"{tmp_path / 'k'}.pub", built.verify_at


def verify(public: str, at: float, *paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "verify", "--public-key", public, "--now", epoch_rfc3339(at),
                           *paths], capture_output=True, text=True, timeout=60)


async def test_rotated_files_are_read_before_the_file_being_written(tmp_path):
    """The directory and the files in name order (a shell's ``siem.jsonl*``) verify: the
    live file, first by name, is read last; a rotated file gzipped since keeps its place."""
    out, public, at = await rotated_output(tmp_path)
    rotated = sorted(out.glob("siem.jsonl.*"))
    assert len(rotated) >= 3
    # gzip the oldest, as log rotation tools do
    rotated[0].with_name(rotated[0].name + ".gz").write_bytes(gzip.compress(rotated[0].read_bytes()))
    rotated[0].unlink()
    by_name = sorted(str(p) for p in out.iterdir())
    assert by_name[0] == str(out / "siem.jsonl")
    want = [str(out / "siem.jsonl")]
    assert list_inputs([str(out)])[-1] == want[0]
    assert list_inputs(by_name)[-1] == want[0]
    for args in ([str(out)], by_name):
        got = verify(public, at, *args)
        assert got.returncode == 0, got.stdout + got.stderr
        assert got.stdout.startswith("OK: stream siem: 30 events"), got.stdout


def test_rotation_order_keeps_other_files_in_place():
    """Only a PATH and its PATH.<stamp> files move (to where the first of them stood, by
    time, PATH last); other files, stdin and the order the user gave stay as they were."""
    files = ["b.jsonl", "d/siem.jsonl", "d/siem.jsonl.20240501T120001.000001Z",
             "a.jsonl", "d/siem.jsonl.20240501T120000.999999Z.gz", "-",
             "d/other.20240101T000000Z", "d/siem.jsonl.backup"]
    assert rotation_order(files) == [
        "b.jsonl", "d/siem.jsonl.20240501T120000.999999Z.gz",
        "d/siem.jsonl.20240501T120001.000001Z", "d/siem.jsonl", "a.jsonl", "-",
        "d/other.20240101T000000Z", "d/siem.jsonl.backup"]
