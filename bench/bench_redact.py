"""Benchmark: what redaction adds to decoding and encoding one audit event.

Generates realistic WorkOS-style events deterministically, then prints events/s for
msgspec decode+encode alone, for decode+redact+encode (dicts, then
``Redactor(event)``), for the fused ``Redactor.redact_line`` and ``redact_lines`` (one line
in, redacted JSON bytes out), and each overhead over decode+encode, for the default
policy (drop) and for mask and hash mode. Two event sets: this file's flat ones (~590
bytes, half of them with an id inside ``metadata.reason``) and, with ``--set nested`` (or
``both``, the default), the events of ``bench/throughput.py`` (``gen_events.py``: ~740
bytes, nested ``metadata``, seven internal ids each).

    .venv/bin/python bench/bench_redact.py [--events 20000] [--rounds 5] [--set flat|nested|both]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import msgspec

from auditshipd.redact import DEFAULT_POLICY, Redactor, compile_policy

__all__ = ["make_events", "main"]

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ACTIONS = ["user.provisioned", "user.deprovisioned", "user.invited", "user.signed_in",
           "organization_membership.role_changed", "dsync.user.updated", "admin.settings_changed",
           "audit_logs.exported"]
FIRST = ["Jane", "Bob", "Alice", "Hank", "Maria", "Wei", "Olu", "Priya"]
LAST = ["Doe", "Smith", "Admin", "Scorpio", "Garcia", "Chen", "Okafor", "Patel"]
ORGS = [("acme-corp", "Acme Corp"), ("globex", "Globex Corporation"), ("initech", "Initech")]
AGENTS = ["Mozilla/5.0 Chrome/124.0", "Okta SCIM Client 1.0", "curl/8.5.0"]


def _ulid(rng: random.Random) -> str:
    return "01HZ" + "".join(rng.choice(CROCKFORD) for _ in range(22))


def make_events(n: int, seed: int = 7) -> list[bytes]:
    """``n`` encoded events, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        slug, _org_name = rng.choice(ORGS)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        t_first = rng.choice(FIRST)
        metadata: dict = {"role": rng.choice(["member", "admin"]), "membership_id": "om_" + _ulid(rng)}
        if rng.random() < 0.5:
            metadata["reason"] = f"invited by user_{_ulid(rng)}"
        else:
            metadata["source"] = rng.choice(["dashboard", "scim", "api"])
        event = {
            "id": _ulid(rng),
            "action": rng.choice(ACTIONS),
            "occurred_at": f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00.000Z",
            "version": 1,
            "organization": {"id": "org_" + _ulid(rng), "slug": slug},
            "actor": {"type": "user", "id": "user_" + _ulid(rng), "name": f"{first} {last}",
                      "email": f"{first.lower()}.{last.lower()}@{slug}.com"},
            "targets": [{"type": "user", "id": "user_" + _ulid(rng),
                         "email": f"{t_first.lower()}@{slug}.com"}],
            "context": {"location": f"203.0.113.{rng.randint(1, 254)}", "user_agent": rng.choice(AGENTS)},
            "metadata": metadata,
        }
        out.append(msgspec.json.encode(event))
    return out


def _rate(lines: list[bytes], redactor: Redactor | None, rounds: int, mode: str = "dict") -> float:
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        if redactor is None:
            for line in lines:
                encode(decode(line))
        elif mode == "dict":
            for line in lines:
                encode(redactor(decode(line)))
        elif mode == "line":
            redact_line = redactor.redact_line
            for line in lines:
                redact_line(line)
        else:
            redactor.redact_lines(lines)
        best = min(best, time.perf_counter() - start)
    return len(lines) / best


def nested_events(n: int) -> list[bytes]:
    """``n`` events as bench/throughput.py writes them (bench/gen_events.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gen_events import generate

    return b"".join(generate(n)).split(b"\n")[:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", choices=("flat", "nested", "both"), default="both")
    args = parser.parse_args()
    sets = {"flat": make_events, "nested": nested_events}
    for name, make in sets.items():
        if args.set in (name, "both"):
            _run(f"{name} events", make(args.events), args.rounds)


def _run(title: str, lines: list[bytes], rounds: int) -> None:
    avg = sum(map(len, lines)) / len(lines)
    print(f"{title}: {len(lines)}, {avg:.0f} bytes on average, best of {rounds} rounds")
    base = _rate(lines, None, rounds)
    print(f"  {'decode+encode (no redaction)':<36}{base:>10,.0f} events/s  {1e6 / base:6.2f} us/event")
    policies = {
        "drop": DEFAULT_POLICY,
        "mask": compile_policy({"action": "mask"}),
        "hash": compile_policy({"action": "hash", "hash_key": "bench-key-0123456789abcdef"}),
    }
    for name, redactor in policies.items():
        for mode, label in (("dict", "decode+Redactor+encode"), ("line", "redact_line"),
                            ("lines", "redact_lines")):
            rate = _rate(lines, redactor, rounds, mode)
            overhead = base / rate - 1
            print(f"  {label + ' ' + name:<36}{rate:>10,.0f} events/s  {1e6 / rate:6.2f} us/event"
                  f"  overhead {overhead:+.0%}")


if __name__ == "__main__":
    main()
