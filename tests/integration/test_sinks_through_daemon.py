"""Each SIEM sink, driven by the real daemon (subprocess) against its real server.

The sink-level suites prove each protocol in detail; these prove the whole chain:
journal -> redaction -> batching -> sink -> server, with the server failing and
recovering, and internal ids absent from every byte the server received.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from tests.fakes.datadog_server import DatadogIntakeServer
from tests.fakes.otlp_receiver import OtlpLogsReceiver, any_value
from tests.fakes.splunk_hec_server import SplunkHecServer
from tests.servers.mosquitto import MosquittoServer
from tests.servers.moto_s3 import AWS_ENV, MotoS3Server

from auditshipd import AuditJournal
from auditshipd.delivery.deadletters import DeadLetterFile
from auditshipd.testing import wait_for_async

pytestmark = pytest.mark.integration

N = 1500


def write_events(path: Path, n: int = N, prefix: str = "e") -> list[str]:
    """Events with internal ids planted where redaction must remove them."""
    j = AuditJournal(path)
    ids = []
    for i in range(n):
        eid = f"{prefix}{i:05d}"
        j.record("user.provisioned", id=eid,
                 actor={"type": "user", "id": "user_01HINTERNALACTOR0000000000",
                        "email": "admin@acme.test", "name": "Ada"},
                 organization={"id": "org_01HINTERNALORG00000000000", "slug": "acme"},
                 targets=[{"type": "user", "id": f"user_01HTARGET{i:017d}",
                           "email": f"u{i}@acme.test"}],
                 metadata={"membership_id": "om_01HSECRETMEMBERSHIP000000", "role": "member"})
        ids.append(eid)
    j.close()
    return ids


def assert_redacted(raw: bytes) -> None:
    for secret in (b"INTERNALACTOR", b"INTERNALORG", b"01HTARGET", b"SECRETMEMBERSHIP"):
        assert secret not in raw, f"internal id {secret!r} left the machine"
    assert b"admin@acme.test" in raw and b"acme" in raw


wait_until = functools.partial(wait_for_async, timeout=60.0, interval=0.05)


def batch_table(max_events: int = 200) -> str:
    return f"""
[sinks.batch]
max_events = {max_events}
timeout = 0.05
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.5
"""


async def test_splunk_hec_with_acks_through_daemon(ws):
    """Daemon -> HEC with indexer acks; a busy spell and an outage; every id arrives
    (at least once: a batch sent before the outage whose ack was lost is sent again)."""
    async with SplunkHecServer(token="hec-token-123", acks=True) as srv:
        srv.fail_next("busy", times=2, retry_after=1)
        ws.write_config(f"""
[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "{srv.url}"
token = "${{HEC_TOKEN}}"
acks = true
gzip = true
ack_poll_interval = 0.05
# A batch whose ack query the outage interrupted is resent once this runs out (not after
# the default 20 s).
ack_timeout = 3
{batch_table()}""")
        ids = write_events(ws.journal)
        d = ws.daemon(env={"HEC_TOKEN": "hec-token-123"}).start()
        try:
            await wait_until(lambda: len(srv.events) >= 400, message="first events")
            await srv.stop()
            retried = d.log().count(b"retrying in")  # the busy spell's, so far
            more = write_events(ws.journal, 300, prefix="m")
            # the outage lasts until the daemon has felt it: two more retries
            await wait_until(lambda: d.log().count(b"retrying in") >= retried + 2,
                             message="retries while down")
            await srv.start()
            await wait_until(lambda: set(srv.event_ids) >= set(ids + more), message="all events")
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
    assert sorted(set(srv.event_ids)) == sorted(ids + more)
    assert_redacted(json.dumps(srv.events).encode())
    assert b"hec-token-123" not in d.log()


async def test_datadog_through_daemon(ws):
    """Daemon -> Datadog intake (gzip), 429 then 500 then success; every id arrives."""
    async with DatadogIntakeServer(api_key="dd-key-456") as srv:
        srv.fail_next("rate_limited", retry_after=1)
        srv.fail_next("error", after=1)
        ws.write_config(f"""
[[sinks]]
name = "dd"
type = "datadog"
api_key = "${{DD_KEY}}"
url = "{srv.url}"
service = "auditshipd-test"
{batch_table()}""")
        ids = write_events(ws.journal)
        d = ws.daemon(env={"DD_KEY": "dd-key-456"}).start()
        try:
            await wait_until(lambda: set(srv.event_ids) >= set(ids), message="all events")
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
    assert sorted(set(srv.event_ids)) == sorted(ids)
    assert_redacted(json.dumps(srv.logs).encode())
    assert b"dd-key-456" not in d.log()


def test_s3_through_daemon_with_server_down(ws, monkeypatch):
    """Daemon -> S3 (moto server), server killed and restarted: every id in the objects."""
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = MotoS3Server(ws.root / "moto")
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        client.create_bucket(Bucket="audit")
        ws.write_config(f"""
[[sinks]]
name = "s3"
type = "s3"
bucket = "audit"
region = "us-east-1"
endpoint_url = "{server.endpoint_url}"
timeout = 5.0
{batch_table(500)}""")
        ids = write_events(ws.journal)
        with ws.daemon(env=AWS_ENV) as d:
            d.wait_started()

            def keys():
                try:
                    resp = client.list_objects_v2(Bucket="audit")
                except Exception:
                    return []
                return [o["Key"] for o in resp.get("Contents", [])]

            def got():
                out = []
                for key in keys():
                    body = client.get_object(Bucket="audit", Key=key)["Body"].read()
                    out.extend(json.loads(x)["id"] for x in gzip.decompress(body).splitlines())
                return out

            _wait_sync(lambda: set(got()) >= set(ids), "every event before the outage")
            raw = b"".join(gzip.decompress(client.get_object(Bucket="audit", Key=k)["Body"].read())
                           for k in keys())
            server.kill()  # moto keeps its objects in memory: they go with it
            more = write_events(ws.journal, 500, prefix="m")
            _wait_sync(lambda: d.log().count(b"retrying in") >= 2, "retries while S3 is down")
            server.start()
            client.create_bucket(Bucket="audit")
            # moto comes back empty: a retry that lands before the bucket is made again is
            # answered NoSuchBucket (permanent) and dead-lettered. The oracle: every event
            # is in S3 or in the dead letters; a replay then puts the rest in S3.
            dlq = DeadLetterFile(ws.state, "s3")

            def dead():
                return {e["id"] for letter in dlq.read() for e in letter.events}

            _wait_sync(lambda: set(got()) | dead() >= set(more), "events of the outage")
            if dead():
                out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "dlq", "replay",
                                      "--sink", "s3", "-c", str(ws.config)], cwd=ws.root,
                                     env={**os.environ, **AWS_ENV}, capture_output=True, text=True)
                assert out.returncode == 0, out.stderr
            assert set(got()) >= set(more)
            assert d.terminate() == 0
        assert_redacted(raw)
    finally:
        server.stop()


async def test_mqtt_through_daemon(ws):
    """Daemon -> Mosquitto (QoS 1, one message per event): a subscriber gets every id."""
    import aiomqtt

    broker = MosquittoServer(ws.root / "mqtt")
    broker.start()
    received: list[dict] = []
    try:
        async with aiomqtt.Client(broker.host, broker.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as sub:
            await sub.subscribe("audit/#", qos=1)
            ws.write_config(f"""
[[sinks]]
name = "mqtt"
type = "mqtt"
url = "{broker.url}"
topic = "audit/{{organization.slug}}/{{action}}"
qos = 1
{batch_table()}""")
            ids = write_events(ws.journal, 500)
            d = ws.daemon().start()
            try:
                async def collect():
                    async for message in sub.messages:
                        received.append(json.loads(bytes(message.payload)))
                        assert str(message.topic) == "audit/acme/user.provisioned"
                        if len(received) >= len(ids):
                            return

                await asyncio.wait_for(collect(), 60)
                assert d.terminate() == 0
            finally:
                if d.poll() is None:
                    d.kill()
    finally:
        broker.stop()
    assert sorted({e["id"] for e in received}) == sorted(ids)
    assert_redacted(json.dumps(received).encode())


def _wait_sync(pred, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def test_nats_through_daemon_with_server_restart(ws):
    """Daemon -> JetStream (nats-server -js), server killed and restarted mid-stream:
    every id stored exactly once (the resend de-duplicated by Nats-Msg-Id)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig
    from tests.servers.nats import NatsServer

    server = NatsServer(ws.root / "nats")
    server.start()

    async def stream_state():
        nc = await nats.connect(server.url)
        try:
            return (await nc.jetstream().stream_info("AUDIT")).state.messages
        finally:
            await nc.close()

    async def stored_ids():
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            total = (await js.stream_info("AUDIT")).state.messages
            sub = await js.pull_subscribe("audit.>", stream="AUDIT",
                                          config=ConsumerConfig(ack_policy=AckPolicy.NONE))
            msgs = []
            while len(msgs) < total:
                msgs += await sub.fetch(min(500, total - len(msgs)), timeout=30)
            return [json.loads(m.data)["id"] for m in msgs], b"".join(m.data for m in msgs)
        finally:
            await nc.close()

    try:
        nc = await nats.connect(server.url)
        await nc.jetstream().add_stream(name="AUDIT", subjects=["audit.>"], duplicate_window=600)
        await nc.close()
        ws.write_config(f"""
[[sinks]]
name = "nats"
type = "nats"
url = "{server.url}"
subject = "audit.{{organization.slug}}.{{action}}"
stream = "AUDIT"
timeout = 2.0
{batch_table()}""")
        ids = write_events(ws.journal)
        d = ws.daemon().start()
        try:
            async def reached(n):
                try:
                    return await stream_state() >= n
                except Exception:
                    return False

            deadline = time.monotonic() + 60
            while not await reached(300):
                assert time.monotonic() < deadline, "no events before the outage"
                await asyncio.sleep(0.05)
            server.kill()
            more = write_events(ws.journal, 300, prefix="m")
            await wait_until(lambda: d.log().count(b"retrying in") >= 2, message="retries while down")
            server.start()
            deadline = time.monotonic() + 60
            while not await reached(len(ids) + len(more)):
                assert time.monotonic() < deadline, "not every event after the restart"
                await asyncio.sleep(0.05)
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
        got, raw = await stored_ids()
    finally:
        server.stop()
    assert sorted(got) == sorted(ids + more)  # each once: duplicates were dropped
    assert_redacted(raw)


async def test_otlp_through_daemon(ws):
    """Daemon -> OTLP/HTTP receiver (protobuf, gzip, auth header): 503 with Retry-After,
    429, an outage, then recovery; every id arrives as a LogRecord whose body is redacted."""
    async with OtlpLogsReceiver(token="otlp-token-789") as srv:
        srv.fail_next("http", status=503, retry_after=1)
        srv.fail_next("http", status=429, after=1)
        ws.write_config(f"""
[[sinks]]
name = "otel"
type = "otlp"
url = "{srv.base_url}"
headers = {{ Authorization = "Bearer ${{OTLP_TOKEN}}" }}
service_name = "auditshipd-test"
{batch_table()}""")
        ids = write_events(ws.journal)
        d = ws.daemon(env={"OTLP_TOKEN": "otlp-token-789"}).start()
        try:
            await wait_until(lambda: len(srv.records) >= 400, message="first records")
            await srv.stop()
            more = write_events(ws.journal, 300, prefix="m")
            await wait_until(lambda: d.log().count(b"retrying in") >= 3, message="retries while down")
            await srv.start()
            await wait_until(lambda: set(srv.event_ids) >= set(ids + more), message="all records")
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
    assert sorted(set(srv.event_ids)) == sorted(ids + more)
    assert srv.failures_served == ["http", "http"]
    assert_redacted(json.dumps([any_value(r.body) for r in srv.records]).encode())
    assert b"otlp-token-789" not in d.log()


async def test_gcs_through_daemon_with_emulator_restart(ws):
    """Daemon -> GCS (gcp-storage-emulator, data on disk), emulator killed and restarted:
    every id in the objects, redacted."""
    import aiohttp
    from tests.servers.gcs_emulator import GcsEmulator

    server = GcsEmulator(ws.root / "gcs")
    server.start()
    endpoint = server.endpoint_url

    async def stored() -> list[bytes]:
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{endpoint}/storage/v1/b/audit/o") as resp:
                    listing = await resp.json()
                bodies = []
                for item in listing.get("items", []):
                    url = f"{endpoint}/storage/v1/b/audit/o/{item['name'].replace('/', '%2F')}"
                    async with s.get(url, params={"alt": "media"}) as resp:
                        bodies.append(gzip.decompress(await resp.read()))
                return bodies
        except aiohttp.ClientError:
            return []

    async def stored_ids() -> set[str]:
        return {json.loads(x)["id"] for body in await stored() for x in body.splitlines()}

    async def until(pred_ids: set[str], what: str) -> None:
        deadline = time.monotonic() + 60
        while not pred_ids <= await stored_ids():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)

    try:
        async with aiohttp.ClientSession() as s, s.post(
            f"{endpoint}/storage/v1/b", json={"name": "audit"}
        ) as resp:
            assert resp.status == 200
        ws.write_config(f"""
[[sinks]]
name = "gcs"
type = "gcs"
bucket = "audit"
endpoint_url = "{endpoint}"
timeout = 5.0
{batch_table(500)}""")
        ids = write_events(ws.journal)
        d = ws.daemon().start()
        try:
            await until(set(ids), "every event before the outage")
            server.kill()
            more = write_events(ws.journal, 500, prefix="m")
            await wait_until(lambda: d.log().count(b"retrying in") >= 2, message="retries while down")
            server.start()
            await until(set(ids + more), "every event after the restart")
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
        assert_redacted(b"".join(await stored()))
        assert not DeadLetterFile(ws.state, "gcs").read()
    finally:
        server.stop()


async def test_azure_blob_through_daemon_with_azurite_restart(ws):
    """Daemon -> Azure Blob Storage (Azurite, blobs on disk, account key from the
    environment), Azurite stopped and restarted: every id in the blobs, redacted, none
    dead-lettered, and the key in no log line."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob.aio import BlobServiceClient
    from tests.servers.azurite import ACCOUNT_KEY, Azurite

    server = Azurite(ws.root / "azurite")
    server.start()

    async def stored() -> list[bytes]:
        try:
            async with BlobServiceClient.from_connection_string(
                server.connection_string, retry_total=0
            ) as svc:
                client = svc.get_container_client("audit")
                return [gzip.decompress(await (await client.download_blob(
                            b.name, decompress=False)).readall())
                        async for b in client.list_blobs()]
        except AzureError:
            return []

    async def stored_ids() -> set[str]:
        return {json.loads(x)["id"] for body in await stored() for x in body.splitlines()}

    async def until(want: set[str], what: str) -> None:
        deadline = time.monotonic() + 60
        while not want <= await stored_ids():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)

    try:
        async with BlobServiceClient.from_connection_string(server.connection_string) as svc:
            await svc.create_container("audit")
        ws.write_config(f"""
[[sinks]]
name = "azure"
type = "azure_blob"
endpoint_url = "{server.endpoint_url}"
container = "audit"
account_key = "${{AZURE_STORAGE_KEY}}"
timeout = 5.0
{batch_table(500)}""")
        ids = write_events(ws.journal)
        d = ws.daemon(env={"AZURE_STORAGE_KEY": ACCOUNT_KEY}).start()
        try:
            await until(set(ids), "every event before the outage")
            server.stop()  # SIGTERM: Azurite keeps its blob index (see test_sink_azure_blob)
            more = write_events(ws.journal, 500, prefix="m")
            await wait_until(lambda: d.log().count(b"retrying in") >= 2, message="retries while down")
            server.start()
            await until(set(ids + more), "every event after the restart")
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
        assert_redacted(b"".join(await stored()))
        assert not DeadLetterFile(ws.state, "azure").read()
        assert ACCOUNT_KEY.encode() not in d.log()
        assert b"http_logging_policy" not in d.log()  # no SDK request dumps at INFO
    finally:
        server.stop()
