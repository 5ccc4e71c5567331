"""The nats sink against a private ``nats-server -js`` started by the tests on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from tests.servers.mosquitto import make_test_pki
from tests.servers.nats import NatsServer
from ulid import ULID

from auditshipd.errors import PermanentError, RetryableError
from auditshipd.plugin import Batch, SinkContext
from auditshipd.sinks.nats import NatsOptions, NatsSink, validate_options
from auditshipd.testing import free_port

pytestmark = pytest.mark.integration

WAIT = 30.0  # upper bound of every wait on a condition
STREAM = "AUDIT"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats")
    srv.start()
    yield srv
    srv.stop()


@contextlib.asynccontextmanager
async def jetstream(url: str, **connect: Any) -> AsyncIterator[Any]:
    nc = await nats.connect(url, **connect)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def add_stream(url: str, **connect: Any) -> None:
    async with jetstream(url, **connect) as js:
        await js.add_stream(name=STREAM, subjects=["audit.>"], duplicate_window=300)


async def stored(url: str, **connect: Any) -> list[Any]:
    """Every message the stream holds, in stream order."""
    async with jetstream(url, **connect) as js:
        total = (await js.stream_info(STREAM)).state.messages
        # No acks: an explicit-ack consumer stops after max_ack_pending (1,000) messages.
        sub = await js.pull_subscribe("audit.>", stream=STREAM,
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        out: list[Any] = []
        while len(out) < total:
            out += await sub.fetch(min(500, total - len(out)), timeout=WAIT)
        return out


@contextlib.asynccontextmanager
async def nats_sink(tmp_path: Path, url: str, **options: Any) -> AsyncIterator[NatsSink]:
    opts = NatsOptions(url=url, **{"timeout": 5.0, **options})
    validate_options(opts)
    ctx = SinkContext(name="nats-test", state_dir=tmp_path, logger=logging.getLogger("test.nats"))
    sink = NatsSink("nats-test", opts, ctx)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


async def deliver(sink: NatsSink, batch: Batch, timeout: float = WAIT) -> int:
    """What the core does: resend after a RetryableError (from ``accepted`` on) until
    the batch is acknowledged; returns the number of failed attempts."""
    deadline = time.monotonic() + timeout
    failures = 0
    while True:
        try:
            await sink.send(batch)
            return failures
        except RetryableError as err:
            failures += 1
            batch = batch[err.accepted:]
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)  # the core's backoff between attempts


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


async def test_every_event_stored_once_with_msg_id_and_subject(
    server: NatsServer, tmp_path: Path
) -> None:
    """Each event is one message on its rendered subject, Nats-Msg-Id = id, in journal order."""
    await add_stream(server.url)
    odd = {"id": str(ULID()), "action": "a.b*c>d e", "occurred_at": "2024-05-17T13:59:58Z"}
    sent: list[dict[str, Any]] = []
    async with nats_sink(tmp_path, server.url, stream=STREAM) as sink:
        for n in (50, 1, 700):
            events = make_events(n)
            await sink.send(Batch(events))
            sent += events
        await sink.send(Batch([odd]))
        sent.append(odd)
    msgs = await stored(server.url)
    assert [json.loads(m.data)["id"] for m in msgs] == [e["id"] for e in sent]
    for m, event in zip(msgs, sent, strict=True):
        assert m.headers["Nats-Msg-Id"] == event["id"]
        if event is odd:
            assert m.subject == "audit.unknown.a_b_c_d_e"
        else:  # one token per placeholder: the dot of "user.login" is no separator
            action = event["action"].replace(".", "_")
            assert m.subject == f"audit.{event['organization']['slug']}.{action}"


async def test_resent_batch_is_deduplicated_by_jetstream(
    server: NatsServer, tmp_path: Path
) -> None:
    """A batch sent twice (crash redelivery) is stored once: the stream drops the copies."""
    await add_stream(server.url)
    batch = Batch(make_events(200))
    async with nats_sink(tmp_path, server.url) as sink:
        await sink.send(batch)
        await sink.send(batch)
        await sink.send(batch[50:120])
    ids = [json.loads(m.data)["id"] for m in await stored(server.url)]
    assert ids == batch.ids


async def test_server_killed_mid_stream_and_restarted_loses_nothing(
    server: NatsServer, tmp_path: Path
) -> None:
    """SIGKILL mid-batch: RetryableError; after a restart every id is stored exactly once."""
    await add_stream(server.url)
    sent: list[str] = []
    # The kill is felt once a publish goes unacknowledged for ``timeout`` seconds, and a
    # connect to the stopped server gives up after ``timeout`` + 5: 2 s keeps the outage short.
    async with nats_sink(tmp_path, server.url, timeout=2.0) as sink:
        for _ in range(3):
            batch = Batch(make_events(100))
            await sink.send(batch)
            sent += batch.ids

        big = Batch(make_events(20000))
        in_flight = asyncio.get_running_loop().create_task(sink.send(big))
        async with jetstream(server.url) as js:
            deadline = time.monotonic() + WAIT
            while (await js.stream_info(STREAM)).state.messages <= len(sent):
                assert time.monotonic() < deadline, "the big batch never started"
                await asyncio.sleep(0.01)  # polling the stream: no event to wait on
        server.kill()
        retry_from = 0
        try:
            await asyncio.wait_for(in_flight, WAIT)
            retry_from = len(big)  # acknowledged whole before the kill
        except RetryableError as err:
            retry_from = err.accepted
        assert retry_from < len(big), "the kill came too late to test anything"
        down = Batch(make_events(10))
        with pytest.raises(RetryableError):
            await sink.send(down)

        server.start()
        # Resent from the first unacknowledged event, like the core: JetStream stores
        # the messages that had arrived before the kill only once.
        await deliver(sink, big[retry_from:])
        await deliver(sink, down)
        after = Batch(make_events(100))
        await deliver(sink, after)
        sent += big.ids + down.ids + after.ids
    ids = Counter(json.loads(m.data)["id"] for m in await stored(server.url))
    assert set(ids) == set(sent)
    assert max(ids.values()) == 1


async def test_no_stream_for_the_subject_holds_the_batch_until_one_exists(
    server: NatsServer, tmp_path: Path
) -> None:
    """No stream captures the subject: RetryableError (nothing dead-lettered); once the
    stream is created the same batch is stored."""
    batch = Batch(make_events(5))
    async with nats_sink(tmp_path, server.url) as sink:
        with pytest.raises(RetryableError, match="no JetStream stream"):
            await sink.send(batch)
        await add_stream(server.url)
        await sink.send(batch)
    assert [json.loads(m.data)["id"] for m in await stored(server.url)] == batch.ids


async def test_wrong_expected_stream_is_permanent_per_event(
    server: NatsServer, tmp_path: Path
) -> None:
    """stream = a name that does not capture the subject: PermanentError for the first
    event (accepted=0, rejected=1), so the core dead-letters it rather than guessing."""
    await add_stream(server.url)
    async with nats_sink(tmp_path, server.url, stream="OTHER") as sink:
        with pytest.raises(PermanentError, match="err_code 10060") as err:
            await sink.send(Batch(make_events(3)))
    assert (err.value.accepted, err.value.rejected) == (0, 1)


async def test_bad_credentials_are_permanent(tmp_path: Path) -> None:
    """A server refusing user/password gives PermanentError without the password in it;
    the right ones deliver."""
    server = NatsServer(tmp_path / "nats", users={"shipper": "s3cret-pw"})
    server.start()
    try:
        await add_stream(server.url, user="shipper", password="s3cret-pw")
        async with nats_sink(tmp_path, server.url, user="shipper", password="wrong-pw") as sink:
            with pytest.raises(PermanentError, match="authorization") as err:
                await sink.send(Batch(make_events(3)))
            assert "wrong-pw" not in str(err.value)
        batch = Batch(make_events(3))
        async with nats_sink(tmp_path, server.url, user="shipper", password="s3cret-pw") as sink:
            await sink.send(batch)
        msgs = await stored(server.url, user="shipper", password="s3cret-pw")
        assert [json.loads(m.data)["id"] for m in msgs] == batch.ids
    finally:
        server.stop()


async def test_a_refused_connection_is_reported_as_refused(tmp_path: Path) -> None:
    """No server on the port: the send fails with the refusal, retryable, as soon as the
    connection is refused (nats-py was left retrying it until the sink's timeout, which
    then reported a timeout)."""
    url = f"nats://127.0.0.1:{free_port()}"
    async with nats_sink(tmp_path, url, timeout=2.0) as sink:
        with pytest.raises(RetryableError) as err:
            await sink.send(Batch(make_events(1)))
    assert "ConnectionRefusedError" in str(err.value), str(err.value)
    assert "timeout" not in str(err.value)


async def test_tls_verifies_the_server_certificate(tmp_path: Path) -> None:
    """tls://: delivers with the server's CA in ca_file; an unknown CA is refused (retryable)."""
    ca, cert, key = make_test_pki(tmp_path / "pki")
    server = NatsServer(tmp_path / "nats", tls=(ca, cert, key))
    server.start()
    try:


        ctx = ssl.create_default_context(cafile=str(ca))
        await add_stream(server.url, tls=ctx)
        async with nats_sink(tmp_path, server.url, ca_file=str(ca)) as sink:
            await sink.send(Batch(make_events(5)))
        async with nats_sink(tmp_path, server.url) as sink:  # system CAs only
            with pytest.raises(RetryableError, match="(?i)certificate"):
                await sink.send(Batch(make_events(1)))
        assert len(await stored(server.url, tls=ctx)) == 5
    finally:
        server.stop()


async def test_subject_too_long_for_the_server_is_set_aside_alone(
    server: NatsServer, tmp_path: Path
) -> None:
    """An event whose rendered subject would exceed the server's control line (4 KB; the
    server closes the connection on it) is PermanentError for that event alone: the events
    before it are stored, the ones after it are sent again, and the connection stays up."""
    await add_stream(server.url)
    events = make_events(5)
    events[2]["action"] = "x" * 5000
    batch = Batch(events)
    async with nats_sink(tmp_path, server.url) as sink:
        with pytest.raises(PermanentError, match="subject") as err:
            await sink.send(batch)
        assert (err.value.accepted, err.value.rejected) == (2, 1)
        await sink.send(batch[3:])
    ids = [json.loads(m.data)["id"] for m in await stored(server.url)]
    assert ids == [e["id"] for i, e in enumerate(events) if i != 2]
    assert "maximum control line exceeded" not in server.log()


async def test_message_over_max_payload_with_its_headers_is_set_aside_alone(
    tmp_path: Path
) -> None:
    """The server's max_payload counts the headers (Nats-Msg-Id) with the payload and
    closes the connection on a larger message: an event that fits only without its headers
    is PermanentError alone, the events before it are stored, nothing is retried for ever."""
    server = NatsServer(tmp_path / "nats", max_payload=4096)
    server.start()
    try:
        await add_stream(server.url)
        events = make_events(3)
        events[1]["pad"] = ""
        events[1]["pad"] = "y" * (4090 - len(json.dumps(events[1], separators=(",", ":"))))
        batch = Batch(events)
        assert len(batch.lines[1]) <= 4096
        async with nats_sink(tmp_path, server.url) as sink:
            with pytest.raises(PermanentError, match="max_payload") as err:
                await sink.send(batch)
            assert (err.value.accepted, err.value.rejected) == (1, 1)
            await sink.send(batch[2:])
        ids = [json.loads(m.data)["id"] for m in await stored(server.url)]
        assert ids == [events[0]["id"], events[2]["id"]]
        assert "Maximum Payload" not in server.log()
    finally:
        server.stop()


async def test_ids_that_differ_only_in_whitespace_or_newlines_are_all_stored(
    server: NatsServer, tmp_path: Path
) -> None:
    """A header value loses its surrounding whitespace and its CR/LF on the way: ids
    "x", "x " and " x" (or "a\\nb" and "a b") made the same Nats-Msg-Id, and JetStream
    acknowledged the later ones as duplicates without storing them. Such ids are sent
    percent-encoded behind '%': every event is stored, a resent batch still once."""
    await add_stream(server.url)
    ids = ["x", "x ", " x", "a\nb", "a b", "\t", "%41", "A"]
    batch = Batch([{"id": i, "action": "login", "occurred_at": "2026-01-01T00:00:00Z"}
                   for i in ids])
    async with nats_sink(tmp_path, server.url) as sink:
        await sink.send(batch)
        await sink.send(batch)
    msgs = await stored(server.url)
    assert [json.loads(m.data)["id"] for m in msgs] == ids
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [
        "x", "%x%20", "%%20x", "%a%0Ab", "a b", "%%09", "%%2541", "A"]
