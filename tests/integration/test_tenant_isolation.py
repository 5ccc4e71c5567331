"""Tenant isolation of scoped sinks, property-based: random events from many
organizations (some without one, some naming other organizations in their metadata),
random scoped ``file`` sinks, the real daemon run in-process; every sink file holds exactly
its organizations' events, checked on the output bytes."""

from __future__ import annotations

import asyncio
import re
import tempfile
import textwrap
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditshipd.config import Config, parse_config
from auditshipd.delivery import commits
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.service.daemon import Daemon

pytestmark = pytest.mark.integration

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
SLUG = st.from_regex(r"[a-z][a-z0-9-]{0,7}", fullmatch=True)
TYPES = sink_types(build_plugin_manager())
CATCH_UP_TIMEOUT = 20.0


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[str], list[dict[str, Any]], list[list[str] | None]]:
    """(organization slugs, journal events, sink scopes); None is an unscoped sink."""
    slugs = draw(st.lists(SLUG, min_size=2, max_size=8, unique=True))
    n = draw(st.integers(1, 150))
    events = []
    for i in range(n):
        owner = draw(st.sampled_from([*slugs, None]))
        other = draw(st.sampled_from(slugs))
        event: dict[str, Any] = {
            "id": f"evt-{i:04d}",
            "action": draw(st.sampled_from(["user.login", "role.granted", "document.exported"])),
            "occurred_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z",
            "actor": {"type": "user", "email": f"user{i}@{other}.example", "name": other},
            "targets": [{"type": "organization", "name": other}],
            # Other organizations' slugs planted where a careless filter might look.
            "metadata": draw(st.sampled_from([
                {},
                {"organization_slug": other, "note": f"moved from {other}"},
                {"org": other, "nested": {"organization": {"id": f"org_{other}", "name": other}}},
                {"organizations": [other, *slugs[:2]], "tenant": other},
            ])),
        }
        if owner is not None:
            event["organization"] = {"slug": owner, "name": other, "id": f"org_{other}"}
        else:
            event["organization"] = draw(st.sampled_from([None, {}, {"name": other}, {"id": f"org_{other}"}]))
            if event["organization"] is None and draw(st.booleans()):
                del event["organization"]
        events.append(event)
    scope = st.one_of(st.none(), st.lists(st.sampled_from([*slugs, "nobody"]), min_size=1, max_size=3, unique=True))
    scopes = draw(st.lists(scope, min_size=1, max_size=5))
    return slugs, events, scopes


def _owner(event: dict[str, Any]) -> str | None:
    org = event.get("organization")
    return org.get("slug") if isinstance(org, dict) else None


def _config_text(root: Path, scopes: list[list[str] | None]) -> str:
    text = textwrap.dedent(f"""
        config_watch = false
        shutdown_timeout = 10
        [journal]
        path = "{root}/journal/audit.jsonl"
        paths = ["{root}/journal/audit.jsonl*"]
        state_dir = "{root}/state"
        poll_interval = 0.05

        [metrics]
        enabled = false
    """)
    for i, scope in enumerate(scopes):
        text += textwrap.dedent(f"""
            [[sinks]]
            name = "s{i}"
            type = "file"
            path = "{root}/out/s{i}.jsonl"
            fsync = false
        """)
        if scope is not None:
            text += f"organizations = {_encode(scope).decode()}\n"
        text += "[sinks.batch]\ntimeout = 0.01\nmax_events = 64\n"
    return text


async def _run_daemon(config_path: Path, journal_size: int) -> None:
    """Start the daemon in-process, wait until every sink's cursor reached the end of the
    journal, then stop it the way SIGTERM does."""
    # A sink whose organizations have no event in the journal (many examples have one)
    # reaches its end through the commit of the pass's position for idle sinks, made
    # every 5 s and looked for once a second: here every 0.05 s, so that no example
    # waits them out.
    with mock.patch.object(commits, "_IDLE_COMMIT_EVERY", 0.05), \
            mock.patch.object(commits, "_STATUS_EVERY", 0.05):
        await _run_until_caught_up(config_path, journal_size)


async def _run_until_caught_up(config_path: Path, journal_size: int) -> None:
    daemon = Daemon(config_path)
    await daemon.startup()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_TIMEOUT
        main = asyncio.create_task(daemon.main_loop())

        def caught_up() -> bool:
            return all(
                sum(c.offset for c in d.committed.segments.values()) >= journal_size
                for d in daemon.drivers.values()
            )

        while not caught_up():
            assert not main.done(), "the daemon's main loop ended early"
            assert loop.time() < deadline, "sinks did not reach the end of the journal"
            await asyncio.sleep(0.01)  # polling a condition with a deadline, not a fixed wait
        daemon.should_exit.set()
        await main
    finally:
        await daemon.shutdown()


def _check_sink(path: Path, scope: list[str] | None, slugs: list[str], events: list[dict[str, Any]]) -> None:
    data = path.read_bytes() if path.exists() else b""
    expected = [e["id"] for e in events if scope is None or _owner(e) in scope]
    got = [_decode(line) for line in data.splitlines()]
    assert [e["id"] for e in got] == expected
    if scope is None:
        return
    for event in got:
        assert event["organization"]["slug"] in scope
    for other in slugs:
        if other not in scope:
            assert b'"slug":"%s"' % other.encode() not in data, f"{other}'s slug in {path.name}"
    # Events without an organization never reach a scoped sink.
    assert all(_owner(e) is not None for e in got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_scoped_sinks_receive_only_their_organizations_events(
    scenario: tuple[list[str], list[dict[str, Any]], list[list[str] | None]],
) -> None:
    """Every scoped sink's output bytes hold exactly its organizations' events, in journal order, and
    no other organization's slug; unscoped sinks hold every event."""
    slugs, events, scopes = scenario
    with tempfile.TemporaryDirectory(prefix="tenants-") as tmp:
        root = Path(tmp)
        journal = root / "journal" / "audit.jsonl"
        journal.parent.mkdir(parents=True)
        data = b"".join(_encode(e) + b"\n" for e in events)
        journal.write_bytes(data)
        text = _config_text(root, scopes)
        config_path = root / "auditshipd.toml"
        config_path.write_text(text)
        config: Config = parse_config(text, str(config_path), TYPES)
        assert [s.organizations for s in config.sinks] == scopes
        asyncio.run(_run_daemon(config_path, len(data)))
        for i, scope in enumerate(scopes):
            _check_sink(root / "out" / f"s{i}.jsonl", scope, slugs, events)


def test_stream_file_sinks_are_isolated(tmp_path: Path) -> None:
    """Sinks of stream files (<org>.toml) receive only their organization, even when a
    file names another organization's slug everywhere it can."""
    slugs = ["acme", "acme-eu", "globex", "ac"]
    events = [
        {"id": f"evt-{i:04d}", "action": "user.login", "occurred_at": "2026-01-01T00:00:00Z",
         "organization": {"slug": slugs[i % 4], "name": slugs[(i + 1) % 4]},
         "metadata": {"org": slugs[(i + 2) % 4]}}
        for i in range(200)
    ]
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True)
    data = b"".join(_encode(e) + b"\n" for e in events)
    journal.write_bytes(data)
    streams = tmp_path / "streams"
    streams.mkdir()
    for slug in slugs:
        # The file names another organization in the sink name and path: the scope stays its own.
        (streams / f"{slug}.toml").write_text(textwrap.dedent(f"""
            [[sinks]]
            name = "siem-{slugs[0]}"
            type = "file"
            path = "{tmp_path}/out/{slug}.jsonl"
            fsync = false
            [sinks.batch]
            timeout = 0.01
        """))
    text = f'streams_dir = "{streams}"\n' + _config_text(tmp_path, [])
    config_path = tmp_path / "auditshipd.toml"
    config_path.write_text(text)
    config = parse_config(text, str(config_path), TYPES)
    assert {s.name: s.organizations for s in config.sinks} == {f"{s}.siem-acme": [s] for s in slugs}
    asyncio.run(_run_daemon(config_path, len(data)))
    for slug in slugs:
        _check_sink(tmp_path / "out" / f"{slug}.jsonl", [slug], slugs, events)
        raw = (tmp_path / "out" / f"{slug}.jsonl").read_bytes()
        assert len(re.findall(rb'"slug":"', raw)) == 50


def test_stream_file_cannot_widen_its_scope(tmp_path: Path) -> None:
    """A stream file that names another organization in ``organizations`` is rejected, for
    that organization only."""
    streams = tmp_path / "streams"
    streams.mkdir()
    (streams / "acme.toml").write_text(
        f'[[sinks]]\nname = "x"\ntype = "file"\npath = "{tmp_path}/a.jsonl"\norganizations = ["acme", "globex"]\n')
    (streams / "globex.toml").write_text(
        f'[[sinks]]\nname = "x"\ntype = "file"\npath = "{tmp_path}/g.jsonl"\n')
    text = f'streams_dir = "{streams}"\n' + _config_text(tmp_path, [])
    config = parse_config(text, str(tmp_path / "auditshipd.toml"), TYPES)
    assert set(config.stream_errors) == {"acme"}
    assert [(s.name, s.organizations) for s in config.sinks] == [("globex.x", ["globex"])]


@pytest.mark.parametrize("c_scanner", ["1", "0"])
def test_lines_padded_with_nul_or_blanks_go_to_their_organization_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, c_scanner: str) -> None:
    """A line with NUL padding, or after a run of NUL a crash left, or after a UTF-8 byte
    order mark, is shipped as the object it holds once stripped: its organization is read from it the same way, so
    another organization's sink (or a sink whose start_at it misses) never gets it."""
    monkeypatch.setenv("AUDITSHIPD_REDACT_C", c_scanner)
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True)

    def event(i: int, slug: str) -> bytes:
        return _encode({"id": f"e{i}", "action": "user.invited", "occurred_at": "2026-01-01T00:00:00Z",
                        "organization": {"slug": slug}})

    data = b"\n".join([event(0, "globex"), event(1, "acme") + b"\x00", b"\x00" * 64 + event(2, "acme"),
                       b" \t" + event(3, "acme") + b"\r", event(4, "globex"),
                       b"\xef\xbb\xbf" + event(5, "acme")]) + b"\n"  # a UTF-8 BOM before it
    journal.write_bytes(data)
    config_path = tmp_path / "auditshipd.toml"
    config_path.write_text(_config_text(tmp_path, [["acme"], ["globex"], None]))
    asyncio.run(_run_daemon(config_path, len(data)))

    def ids(i: int) -> list[str]:
        out = tmp_path / "out" / f"s{i}.jsonl"
        return [_decode(line)["id"] for line in out.read_bytes().splitlines()] if out.exists() else []

    assert ids(0) == ["e1", "e2", "e3", "e5"]
    assert ids(1) == ["e0", "e4"]
    assert ids(2) == ["e0", "e1", "e2", "e3", "e4", "e5"]
