"""Benchmark: what redaction adds to decoding and encoding one audit event.

Generates realistic WorkOS-style events deterministically, then prints events/s for
msgspec decode+encode alone, for decode+redact+encode (dicts, then
``Redactor(event)``), for the fused ``Redactor.redact_line`` (one line in, redacted JSON
bytes out: with its C tier, then on its Python tiers alone) and ``redact_lines``, and each
overhead over decode+encode, for the default policy (drop) and for mask and hash mode.
Three event sets: ``workos`` (~450 bytes, the lifecycle actions with their usual
metadata, four to six internal ids each, one event in ten with an id inside a free-text
string), ``flat`` (~590 bytes, half of them with an id inside ``metadata.reason``) and
``nested``, the events of ``bench/throughput.py`` (``gen_events.py``: ~740 bytes, nested
``metadata``, seven internal ids each).

    .venv/bin/python bench/bench_redact.py [--events 20000] [--rounds 5] [--set workos|flat|nested|all]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import msgspec

from auditshipd.redaction.redactor import DEFAULT_POLICY, Redactor, compile_policy

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


def workos_events(n: int, seed: int = 11) -> list[bytes]:
    """``n`` encoded ~450-byte events of the WorkOS lifecycle, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        slug, _org_name = rng.choice(ORGS)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        t_first, t_last = rng.choice(FIRST), rng.choice(LAST)
        action = rng.choice(ACTIONS)
        metadata: dict = {
            "user.provisioned": lambda: {"directory_id": "directory_" + _ulid(rng), "state": "active"},
            "user.deprovisioned": lambda: {"directory_id": "directory_" + _ulid(rng), "state": "inactive"},
            "user.invited": lambda: {"invitation_id": "invitation_" + _ulid(rng), "role": "member"},
            "user.signed_in": lambda: {"method": rng.choice(["sso", "password", "magic_link"])},
            "organization_membership.role_changed": lambda: {"old_role": "member", "new_role": "admin"},
            "dsync.user.updated": lambda: {"directory_user_id": "directory_user_" + _ulid(rng), "state": "active"},
            "admin.settings_changed": lambda: {"setting": "mfa_required", "value": True},
            "audit_logs.exported": lambda: {"format": "csv", "events": rng.randint(1, 5000)},
        }[action]()
        if rng.random() < 0.1:
            metadata["note"] = f"approved by user_{_ulid(rng)}"
        event = {
            "id": _ulid(rng),
            "action": action,
            "occurred_at": f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
            "version": 1,
            "actor": {"type": "user", "id": "user_" + _ulid(rng), "name": f"{first} {last}"},
            "targets": [{"type": "user", "id": "user_" + _ulid(rng),
                         "email": f"{t_first.lower()}.{t_last.lower()}@{slug}.com"}],
            "organization": {"id": "org_" + _ulid(rng), "slug": slug},
            "context": {"location": f"203.0.113.{rng.randint(1, 254)}"},
            "metadata": metadata,
        }
        out.append(msgspec.json.encode(event))
    return out


def _time_once(lines: list[bytes], redactor: Redactor | None, mode: str) -> float:
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
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
    return time.perf_counter() - start


def nested_events(n: int) -> list[bytes]:
    """``n`` events as bench/throughput.py writes them (bench/gen_events.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gen_events import generate

    return b"".join(generate(n)).split(b"\n")[:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", choices=("workos", "flat", "nested", "all"), default="all")
    args = parser.parse_args()
    tier = "C tier built" if DEFAULT_POLICY.fast_path.c_plan is not None else "no C tier (Python tiers only)"
    print(f"redact_line: {tier}")
    sets = {"workos": workos_events, "flat": make_events, "nested": nested_events}
    for name, make in sets.items():
        if args.set in (name, "all"):
            _run(f"{name} events", make(args.events), args.rounds)


def _run(title: str, lines: list[bytes], rounds: int) -> None:
    """Every variant once per round, in turn (a busy neighbour slows them alike), best round each."""
    avg = sum(map(len, lines)) / len(lines)
    print(f"{title}: {len(lines)}, {avg:.0f} bytes on average, best of {rounds} interleaved rounds")
    variants: list[tuple[str, Redactor | None, str]] = [("decode+encode (no redaction)", None, "")]
    policies = {
        "drop": DEFAULT_POLICY,
        "mask": compile_policy({"action": "mask"}),
        "hash": compile_policy({"action": "hash", "hash_key": "bench-key-0123456789abcdef"}),
    }
    for name, redactor in policies.items():
        python = Redactor(redactor.policy, c_tier=False)
        variants += [(f"decode+Redactor+encode {name}", redactor, "dict"),
                     (f"redact_line {name}", redactor, "line"),
                     (f"redact_line (Python tiers) {name}", python, "line"),
                     (f"redact_lines {name}", redactor, "lines")]
    best = [float("inf")] * len(variants)
    for _ in range(rounds):
        for i, (_label, redactor, mode) in enumerate(variants):
            best[i] = min(best[i], _time_once(lines, redactor, mode))
    base = len(lines) / best[0]
    for (label, redactor, _mode), seconds in zip(variants, best, strict=True):
        rate = len(lines) / seconds
        line = f"  {label:<42}{rate:>10,.0f} events/s  {1e6 / rate:6.2f} us/event"
        if redactor is not None:
            line += f"  overhead {base / rate - 1:+.0%}"
        print(line)


if __name__ == "__main__":
    main()
