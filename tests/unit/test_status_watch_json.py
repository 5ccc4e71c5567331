"""``auditshipd status --watch --json``: JSON lines, one compact object per refresh with
the time it was read, nothing between them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_watch_json_prints_one_object_per_line(tmp_path: Path) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\npath = "{tmp_path}/j/a.jsonl"\nstate_dir = "{tmp_path}/s"\n'
                      f'[[sinks]]\nname = "f"\ntype = "file"\npath = "{tmp_path}/o.jsonl"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditshipd.cli", "status", "-c", str(config), "--watch",
         "--json", "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.kill()
        proc.wait(10)
    docs = [json.loads(line) for line in lines]
    assert all(line.endswith("}\n") and line.count("\n") == 1 for line in lines)
    assert [d["sinks"][0]["name"] for d in docs] == ["f", "f", "f"]
    assert all(d["config"] == str(config) and d["time"].endswith("Z") for d in docs)
