"""The mqtt sink against a private Mosquitto started by the tests on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from tests.servers.mosquitto import MosquittoServer, make_test_pki
from ulid import ULID

from auditshipd.delivery.batch import Batch
from auditshipd.errors import PermanentError, RetryableError
from auditshipd.plugin import SinkContext
from auditshipd.sinks.mqtt import MqttOptions, MqttSink, validate_options

pytestmark = pytest.mark.integration

WAIT = 30.0  # upper bound of every wait on a condition


class Subscriber:
    """Records every message on ``topic`` (QoS 1); reconnects when the broker goes away."""

    def __init__(self, broker: MosquittoServer, topic: str = "audit/#", v5: bool = True):
        self.broker = broker
        self.topic = topic
        self.v5 = v5
        self.messages: list[aiomqtt.Message] = []
        self.ids: Counter[str] = Counter()
        self.ready = asyncio.Event()  # subscribed (set again after each reconnection)
        self.lost = asyncio.Event()  # the connection dropped at least once
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        protocol = aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host, self.broker.port, protocol=protocol, timeout=5
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        await self._record(message)
            except aiomqtt.MqttError:
                self.ready.clear()
                self.lost.set()
                await asyncio.sleep(0.05)  # reconnect backoff while the broker is down

    async def _record(self, message: aiomqtt.Message) -> None:
        async with self._changed:
            self.messages.append(message)
            for line in bytes(message.payload).splitlines():  # type: ignore[arg-type]
                self.ids[json.loads(line)["id"]] += 1
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), WAIT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = MosquittoServer(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def mqtt_sink(tmp_path: Path, url: str, **options: Any) -> AsyncIterator[MqttSink]:
    opts = MqttOptions(url=url, timeout=5.0, **options)
    validate_options(opts)
    ctx = SinkContext(name="mqtt-test", state_dir=tmp_path, logger=logging.getLogger("test.mqtt"))
    sink = MqttSink("mqtt-test", opts, ctx)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def make_events(n: int, orgs: tuple[str, ...] = ("acme", "globex")) -> list[dict[str, Any]]:
    return [
        {
            "id": str(ULID()),
            "action": "user.login" if i % 3 else "role.grant",
            "occurred_at": "2024-05-17T13:59:58.123Z",
            "organization": {"slug": orgs[i % len(orgs)]},
        }
        for i in range(n)
    ]


def user_properties(message: aiomqtt.Message) -> dict[str, str]:
    return dict(getattr(message.properties, "UserProperty", []) or [])


async def test_subscriber_receives_every_event_with_qos1_and_event_id(
    broker: MosquittoServer, tmp_path: Path
) -> None:
    """Every event arrives once, QoS 1, on its rendered topic, with the event_id property."""
    odd = {"id": str(ULID()), "action": "a/b+c#d", "occurred_at": "2024-05-17T13:59:58Z"}
    async with Subscriber(broker) as sub, mqtt_sink(tmp_path, broker.url) as sink:
        sent: list[dict[str, Any]] = []
        for n in (50, 1, 300):
            events = make_events(n)
            await sink.send(Batch(events))
            sent += events
        await sink.send(Batch([odd]))
        sent.append(odd)
        await sub.wait_until(lambda: len(sub.ids) == len(sent))
    assert set(sub.ids) == {e["id"] for e in sent}
    assert max(sub.ids.values()) == 1
    by_id = {e["id"]: e for e in sent}
    for message in sub.messages:
        event = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        assert message.qos == 1
        assert user_properties(message) == {"event_id": event["id"]}
        expected = by_id[event["id"]]
        if expected is odd:
            assert str(message.topic) == "audit/unknown/a_b_c_d"
        else:
            assert str(message.topic) == f"audit/{expected['organization']['slug']}/{expected['action']}"
    # Journal order is kept per topic (and overall, on one connection).
    assert [json.loads(bytes(m.payload))["id"] for m in sub.messages] == [e["id"] for e in sent]  # type: ignore[arg-type]


async def test_batch_mode_sends_one_message_per_topic(broker: MosquittoServer, tmp_path: Path) -> None:
    """message_per = "batch": one JSON Lines message per topic, first/last id properties."""
    events = make_events(30)
    async with Subscriber(broker) as sub, mqtt_sink(
        tmp_path, broker.url, message_per="batch", topic="audit/{organization.slug}"
    ) as sink:
        await sink.send(Batch(events))
        await sub.wait_until(lambda: len(sub.ids) == len(events))
    assert len(sub.messages) == 2  # acme and globex: never one organization's events on another's topic
    for message in sub.messages:
        slug = str(message.topic).rsplit("/", 1)[1]
        mine = [e for e in events if e["organization"]["slug"] == slug]
        lines = [json.loads(x) for x in bytes(message.payload).splitlines()]  # type: ignore[arg-type]
        assert [e["id"] for e in lines] == [e["id"] for e in mine]
        props = user_properties(message)
        assert props["batch_first_id"] == mine[0]["id"]
        assert props["batch_last_id"] == mine[-1]["id"]
        assert props["event_count"] == str(len(mine))


async def test_mqtt_311_publishes_without_properties(broker: MosquittoServer, tmp_path: Path) -> None:
    """protocol = "v311" works (no user properties exist in 3.1.1)."""
    events = make_events(20)
    async with Subscriber(broker, v5=False) as sub, mqtt_sink(
        tmp_path, broker.url, protocol="v311"
    ) as sink:
        await sink.send(Batch(events))
        await sub.wait_until(lambda: len(sub.ids) == len(events))
    assert set(sub.ids) == {e["id"] for e in events}


async def test_broker_killed_mid_stream_and_restarted_loses_nothing(
    broker: MosquittoServer, tmp_path: Path
) -> None:
    """SIGKILL of the broker mid-batch: RetryableError; after a restart every id arrives."""
    delivered: list[str] = []  # ids of batches the sink acknowledged
    retried: list[Batch] = []
    async with Subscriber(broker) as sub, mqtt_sink(tmp_path, broker.url) as sink:
        for _ in range(3):
            batch = Batch(make_events(100))
            await sink.send(batch)
            delivered += batch.ids
        await sub.wait_until(lambda: len(sub.ids) == len(delivered))

        big = Batch(make_events(4000))
        first = big.ids[0]
        in_flight = asyncio.get_running_loop().create_task(sink.send(big))
        await sub.wait_until(lambda: first in sub.ids)
        broker.kill()
        try:
            await asyncio.wait_for(in_flight, WAIT)
            delivered += big.ids  # the whole batch was acknowledged before the kill
        except RetryableError:
            retried.append(big)

        down = Batch(make_events(10))
        with pytest.raises(RetryableError):
            await sink.send(down)
        retried.append(down)

        # The subscriber must have seen the broker go, or "ready" is still the old
        # connection's and the resent batches would be published before it subscribes
        # again (a clean session keeps nothing for it).
        await asyncio.wait_for(sub.lost.wait(), WAIT)
        broker.start()
        await asyncio.wait_for(sub.ready.wait(), WAIT)
        for batch in retried:  # what the core does: send the failed batches again
            await sink.send(batch)
            delivered += batch.ids
        after = Batch(make_events(100))
        await sink.send(after)
        delivered += after.ids
        await sub.wait_until(lambda: set(delivered) <= set(sub.ids))
    assert set(sub.ids) == set(delivered)
    # Only the batch in flight at the kill may arrive twice.
    duplicated = {i for i, n in sub.ids.items() if n > 1}
    assert duplicated <= set(big.ids)
    assert big in retried or not duplicated


async def test_bad_credentials_are_permanent(tmp_path: Path) -> None:
    """A broker refusing the username/password gives PermanentError; the right ones deliver."""
    server = MosquittoServer(tmp_path / "mosquitto", users={"shipper": "s3cret"})
    server.start()
    try:
        async with mqtt_sink(tmp_path, server.url, username="shipper", password="wrong") as sink:
            with pytest.raises(PermanentError, match="refused the connection") as err:
                await sink.send(Batch(make_events(3)))
            assert "wrong" not in str(err.value)
        async with mqtt_sink(tmp_path, server.url, username="shipper", password="s3cret") as sink:
            await sink.send(Batch(make_events(3)))
    finally:
        server.stop()


async def test_publish_denied_by_acl_is_not_silently_delivered(tmp_path: Path) -> None:
    """A v5 PUBACK with "not authorized" (ACL) fails the batch instead of counting it delivered."""
    server = MosquittoServer(tmp_path / "mosquitto", acl="topic read audit/#\ntopic readwrite ok/#\n")
    server.start()
    try:
        async with mqtt_sink(tmp_path, server.url) as sink:
            with pytest.raises(PermanentError, match="(?i)not authori"):
                await sink.send(Batch(make_events(5)))
        async with mqtt_sink(tmp_path, server.url, topic="ok/{action}") as sink:
            await sink.send(Batch(make_events(5)))
    finally:
        server.stop()


async def test_mqtts_verifies_the_broker_certificate(tmp_path: Path) -> None:
    """mqtts: delivers with the broker's CA in ca_file; an unknown CA is refused (retryable)."""
    ca, cert, key = make_test_pki(tmp_path / "pki")
    server = MosquittoServer(tmp_path / "mosquitto", tls=(ca, cert, key))
    server.start()
    try:
        assert server.url.startswith("mqtts://")
        async with mqtt_sink(tmp_path, server.url, ca_file=str(ca)) as sink:
            await sink.send(Batch(make_events(5)))
        async with mqtt_sink(tmp_path, server.url) as sink:  # system CAs only
            with pytest.raises(RetryableError, match="(?i)certificate"):
                await sink.send(Batch(make_events(1)))
        async with mqtt_sink(tmp_path, server.url, tls_verify=False) as sink:
            await sink.send(Batch(make_events(1)))
    finally:
        server.stop()


async def test_a_full_window_of_publishes_logs_no_warning(
    broker: MosquittoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch keeps up to the sink's window of publishes in flight: that is normal, and
    aiomqtt's "There are N pending publish calls." warning stays out of the log."""
    events = make_events(300)
    async with Subscriber(broker) as sub, mqtt_sink(tmp_path, broker.url, qos=2) as sink:
        with caplog.at_level(logging.WARNING):
            await sink.send(Batch(events))
        await sub.wait_until(lambda: len(sub.ids) == len(events))
    assert not [r for r in caplog.records if "pending" in r.getMessage()]


async def test_control_characters_in_topic_values_and_ids_are_published(
    broker: MosquittoServer, tmp_path: Path
) -> None:
    """Mosquitto drops the connection on a topic or user property holding a control
    character (C0, DEL, C1) or a Unicode noncharacter: in a value of the topic those become
    ``_``; an id holding them goes in the user properties percent-encoded behind '%' (so
    distinct ids stay distinct); the payload keeps the event as it is. Every event
    arrives, nothing is retried for ever."""
    events = make_events(6)
    events[1]["action"] = "user\x01login\x7f"
    events[2]["organization"]["slug"] = "ac\x85me\ufdd0"
    events[3]["id"] = "id\x1fwith\ufffecontrols"
    events[4]["action"] = "ok\U0001ffffend"
    async with Subscriber(broker) as sub, mqtt_sink(tmp_path, broker.url) as sink:
        await sink.send(Batch(events))
        await sub.wait_until(lambda: len(sub.ids) == len(events))
    assert list(sub.ids) == [e["id"] for e in events]
    topics = [str(m.topic) for m in sub.messages]
    assert topics[1] == "audit/globex/user_login_"
    assert topics[2] == "audit/ac_me_/user.login"
    assert topics[4] == "audit/acme/ok_end"
    assert user_properties(sub.messages[3]) == {"event_id": "%id%1Fwith%EF%BF%BEcontrols"}
    assert "malformed" not in broker.log()


async def test_broker_maximum_packet_size_is_kept(tmp_path: Path) -> None:
    """A v5 broker that announces a Maximum Packet Size drops the connection on a larger
    PUBLISH. An event too large for it is PermanentError alone (the events before it are
    delivered); with message_per = "batch" a topic's events are cut into messages within
    the limit. Nothing is retried for ever."""
    limit = 4000
    server = MosquittoServer(tmp_path / "mosquitto", max_packet_size=limit)
    server.start()
    try:
        events = make_events(3)
        events[1]["pad"] = "y" * limit
        async with Subscriber(server) as sub, mqtt_sink(tmp_path, server.url) as sink:
            with pytest.raises(PermanentError, match="packet size") as err:
                await sink.send(Batch(events))
            assert (err.value.accepted, err.value.rejected) == (1, 1)
            await sink.send(Batch(events)[2:])
            await sub.wait_until(lambda: len(sub.ids) == 2)
        assert list(sub.ids) == [events[0]["id"], events[2]["id"]]

        many = make_events(60, orgs=("acme",))
        async with Subscriber(server) as sub, mqtt_sink(
            tmp_path, server.url, message_per="batch", topic="audit/{organization.slug}"
        ) as sink:
            await sink.send(Batch(many))
            await sub.wait_until(lambda: len(sub.ids) == len(many))
        assert list(sub.ids) == [e["id"] for e in many]
        assert len(sub.messages) > 1
        assert "oversize" not in server.log()
    finally:
        server.stop()
