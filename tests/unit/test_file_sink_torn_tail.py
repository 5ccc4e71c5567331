"""The file sink after a kill -9 in the middle of a batch: the unfinished last line is cut
before the next write, so no event is ever glued to a fragment."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from auditshipd.delivery.batch import Batch
from auditshipd.plugin import SinkContext
from auditshipd.sinks.file import FileOptions, FileSink


def _sink(path: Path) -> FileSink:
    ctx = SinkContext(name="out", state_dir=path.parent, logger=logging.getLogger("test"))
    return FileSink("out", FileOptions(path=str(path)), ctx)


async def test_unfinished_last_line_is_cut_before_the_next_batch(tmp_path: Path, caplog) -> None:
    path = tmp_path / "out.jsonl"
    whole = b'{"id":"a"}\n{"id":"b"}\n'
    path.write_bytes(whole + b'{"id":"c","meta')  # killed while writing "c"
    sink = _sink(path)
    with caplog.at_level(logging.WARNING):
        await sink.start()
    await sink.send(Batch(lines=[b'{"id":"c"}', b'{"id":"d"}']))
    await sink.close()
    lines = path.read_bytes().splitlines()
    assert [msgspec.json.decode(line)["id"] for line in lines] == ["a", "b", "c", "d"]
    assert "unfinished last line" in caplog.text


async def test_complete_files_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    for content in (b"", b'{"id":"a"}\n'):
        path.write_bytes(content)
        sink = _sink(path)
        await sink.start()
        await sink.close()
        assert path.read_bytes() == content


async def test_a_file_that_is_one_fragment_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id":"a"' * 20000)  # longer than one read block, no newline at all
    sink = _sink(path)
    await sink.start()
    await sink.close()
    assert path.read_bytes() == b""
