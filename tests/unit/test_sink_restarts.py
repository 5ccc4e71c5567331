"""SinkRestarts: growing delays, and a restart skipped when a reload removed, changed or
already restarted the sink."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from auditshipd.service.sink_restarts import MAX_DELAY, SinkRestarts


class _Status:
    def __init__(self) -> None:
        self.writes = 0

    def write(self, final: bool) -> None:
        self.writes += 1


def _driver(name: str, sc: Any) -> Any:
    return SimpleNamespace(name=name, sc=sc, redactor=object(), secrets=["hunter2"],
                           stats=SimpleNamespace(state="running", last_error=None), status=_Status())


def _restarts(configs: dict[str, Any], running: set[str], started: list[Any], fail: list[int]):
    slept: list[float] = []

    async def start(sc: Any, redactor: Any) -> None:
        if fail:
            fail.pop()
            raise OSError("state dir unavailable")
        started.append(sc)

    async def sleep(delay: float) -> None:
        slept.append(delay)

    r = SinkRestarts(start, configs.get, running.__contains__, lambda sc: sc["fp"], sleep=sleep)
    return r, slept


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_delays_grow_and_the_error_is_reported_scrubbed() -> None:
    sc = {"fp": 1}
    started: list[Any] = []
    r, slept = _restarts({"a": sc}, set(), started, [])
    d = _driver("a", sc)
    assert r.crashed(d, RuntimeError("token hunter2 refused")) == 2.0
    assert d.stats.state == "error" and "hunter2" not in d.stats.last_error and d.status.writes == 1
    await _settle()
    assert started == [sc] and slept == [2.0]
    assert r.crashed(_driver("a", sc), RuntimeError("again")) == 4.0
    for _ in range(12):
        delay = r.crashed(_driver("a", sc), RuntimeError("again"))
    assert delay == MAX_DELAY


async def test_no_restart_when_a_reload_removed_changed_or_restarted_the_sink() -> None:
    for configs, running in (({}, set()), ({"a": {"fp": 2}}, set()), ({"a": {"fp": 1}}, {"a"})):
        started: list[Any] = []
        r, _ = _restarts(configs, running, started, [])
        r.crashed(_driver("a", {"fp": 1}), RuntimeError("bug"))
        await _settle()
        assert started == []


async def test_a_restart_that_fails_is_tried_again_later() -> None:
    sc = {"fp": 1}
    started: list[Any] = []
    r, slept = _restarts({"a": sc}, set(), started, [1])
    r.crashed(_driver("a", sc), RuntimeError("bug"))
    await _settle()
    assert started == [sc] and slept == [2.0, 4.0]


async def test_cancel_all_stops_pending_restarts() -> None:
    sc = {"fp": 1}
    started: list[Any] = []
    gate = asyncio.Event()

    async def start(sc: Any, redactor: Any) -> None:
        started.append(sc)

    async def sleep(delay: float) -> None:
        await gate.wait()

    r = SinkRestarts(start, {"a": sc}.get, lambda n: False, lambda c: c["fp"], sleep=sleep)
    r.crashed(_driver("a", sc), RuntimeError("bug"))
    await _settle()
    r.cancel_all()
    gate.set()
    await _settle()
    assert started == []


async def test_cancel_stops_a_restart_that_is_starting_its_driver() -> None:
    """A reload takes a sink over while its restart is half-way through starting it: the
    restart is called off there, so two drivers never run under one name."""
    sc = {"fp": 1}
    entered, finish = asyncio.Event(), asyncio.Event()
    started: list[Any] = []

    async def start(sc: Any, redactor: Any) -> None:
        entered.set()
        await finish.wait()  # e.g. the driver loading its cursor in a thread
        started.append(sc)

    async def sleep(delay: float) -> None:
        pass

    r = SinkRestarts(start, {"a": sc}.get, lambda n: False, lambda c: c["fp"], sleep=sleep)
    r.crashed(_driver("a", sc), RuntimeError("bug"))
    await asyncio.wait_for(entered.wait(), 5)
    r.cancel("a")
    finish.set()
    await _settle()
    assert started == []


async def test_a_sink_that_did_not_start_is_reported_and_tried_again(tmp_path) -> None:
    """start_failed: logged, the status file says so (secrets masked), another try later."""
    import json

    sc = SimpleNamespace(name="a", type="http", options={"bearer_token": "hunter2"},
                         sink_type=SimpleNamespace(secrets=("bearer_token",)))
    started: list[Any] = []
    r, slept = _restarts({"a": {"fp": 1}}, set(), started, [])
    r._fingerprint = lambda c: 1  # the stand-in configs have no fingerprint key
    assert r.start_failed(sc, object(), KeyError("hunter2 refused"), tmp_path) == 2.0
    status = json.loads((tmp_path / "status" / "a.json").read_bytes())
    assert status["state"] == "error" and "did not start" in status["last_error"]
    assert "hunter2" not in status["last_error"]
    await _settle()
    assert slept == [2.0] and len(started) == 1
