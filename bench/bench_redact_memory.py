"""Benchmark: the memory redaction keeps, whatever the input (not a timed test).

Two figures, each measured in a fresh Python process so that one does not inflate the
other:

* ``keys``: 1,500 journal lines, each with a distinct 256 KiB ``metadata`` key, through
  the default policy's ``redact_line`` (the C tier first, as the daemon does). Prints the
  process RSS after the run and its peak (``VmRSS``/``VmHWM``). The caches of key kinds
  and of strings found clean must not keep those keys: target RSS < 150 MB.
* ``reloads``: 50 reloads of a custom policy (``compile_policy`` on a new table, 200 lines
  through it, then dropped), as a SIGHUP would. Prints how many of the 50 old policies are
  still alive after ``gc.collect()`` (weak references to their ``Policy``), and RSS.
  Target: 0 alive.

    .venv/bin/python bench/bench_redact_memory.py [--part keys|reloads|all] [--lines 1500]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import weakref
from pathlib import Path

import msgspec

from auditshipd.redaction.redactor import DEFAULT_POLICY, compile_policy

__all__ = ["main"]

KEY_BYTES = 256 * 1024
_WORDS = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
_FILLER = (_WORDS * (KEY_BYTES // len(_WORDS) + 1))[:KEY_BYTES]


def _status(field: str) -> float:
    """A /proc/self/status figure (kB) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _line(i: int) -> bytes:
    """An event whose metadata has one 256 KiB key, distinct per i (built one at a time:
    the input itself is never all in memory)."""
    key = b"%07d " % i + _FILLER[8:]
    head = (b'{"id":"ev%07d","action":"user.updated","occurred_at":"2024-05-01T09:00:00Z",'
            b'"actor":{"email":"ada@acme.test"},"metadata":{"' % i)
    return head + key + b'":"v","role":"admin"}}'


def part_keys(lines: int) -> None:
    redact = DEFAULT_POLICY.redact_line
    base = _status("VmRSS")
    for i in range(lines):
        out = redact(_line(i))
        if b"role" not in out:  # the event really went through the redactor
            raise AssertionError(out[:200])
    gc.collect()
    c_tier = DEFAULT_POLICY.fast_path is not None and DEFAULT_POLICY.fast_path.c_plan is not None
    print(f"keys: {lines} lines x distinct {KEY_BYTES // 1024} KiB metadata key, default policy "
          f"(C tier {'on' if c_tier else 'off'}): RSS {_status('VmRSS'):.0f} MB after "
          f"(start {base:.0f} MB), peak {_status('VmHWM'):.0f} MB; target < 150 MB")


def part_reloads(reloads: int = 50) -> None:
    lines = [msgspec.json.encode({
        "id": f"ev{i}", "action": "user.updated", "occurred_at": "2024-05-01T09:00:00Z",
        "actor": {"email": "ada@acme.test", "id": f"user_01HZX8K2M3N4P5Q6R7S8T9V{i:03d}"},
        "metadata": {f"key{i}": "value", "membership_id": f"om_{i}", "note": f"n{i}"},
    }) for i in range(200)]
    refs = []
    c_tier = 0
    base = _status("VmRSS")
    for n in range(reloads):
        r = compile_policy({"action": "mask", "allow": ["actor.email", "metadata.*", f"extra{n}"]})
        c_tier += r.fast_path is not None and r.fast_path.c_plan is not None
        for line in lines:
            r.redact_line(line)
        refs.append(weakref.ref(r.policy))
        del r
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    print(f"reloads: {reloads} custom policies compiled ({c_tier} with the C tier), used and "
          f"dropped: {alive} still alive after gc.collect() (target 0); RSS {_status('VmRSS'):.0f} MB "
          f"(start {base:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("keys", "reloads", "all"), default="all")
    parser.add_argument("--lines", type=int, default=1500)
    args = parser.parse_args()
    if args.part == "all":  # each part in its own process: RSS is per process
        for part in ("keys", "reloads"):
            subprocess.run([sys.executable, __file__, "--part", part, "--lines", str(args.lines)],
                           check=True)
    elif args.part == "keys":
        part_keys(args.lines)
    else:
        part_reloads()


if __name__ == "__main__":
    main()
