"""The gcs sink against gcp-storage-emulator (PyPI), started by the tests on a free port."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.helpers.integrity_stream import build_stream, object_batches, verify_download
from tests.helpers.store_proxy import StoreProxy
from tests.servers.gcs_emulator import GcsEmulator
from ulid import ULID

from auditshipd.errors import PermanentError, RetryableError
from auditshipd.integrity.keys import generate_key
from auditshipd.plugin import Batch, SinkContext
from auditshipd.sinks.gcs import GcsOptions, GcsSink, validate_options
from auditshipd.sinks.key_template import DEFAULT_KEY_TEMPLATE, object_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """One emulator per test run; each test makes its own bucket."""
    server = GcsEmulator(tmp_path_factory.mktemp("gcs"))
    server.start()
    yield server
    server.stop()


async def make_bucket(endpoint: str, name: str | None = None) -> str:
    name = name or f"audit-{str(ULID()).lower()}"
    async with aiohttp.ClientSession() as s, s.post(
        f"{endpoint}/storage/v1/b", json={"name": name}
    ) as resp:
        assert resp.status == 200, await resp.text()
    return name


async def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket``: name -> stored bytes."""
    out = {}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{endpoint}/storage/v1/b/{bucket}/o") as resp:
            listing = await resp.json()
        for item in listing.get("items", []):
            url = f"{endpoint}/storage/v1/b/{bucket}/o/{item['name'].replace('/', '%2F')}"
            async with s.get(url, params={"alt": "media"}) as resp:
                assert resp.status == 200
                out[item["name"]] = await resp.read()
    return out


def ids_in(body: bytes) -> list[str]:
    return [json.loads(line)["id"] for line in gzip.decompress(body).splitlines()]


@contextlib.asynccontextmanager
async def gcs_sink(tmp_path: Path, endpoint: str, bucket: str, **options: Any) -> AsyncIterator[GcsSink]:
    opts = GcsOptions(bucket=bucket, endpoint_url=endpoint, timeout=5.0, **options)
    validate_options(opts)
    ctx = SinkContext(name="gcs-test", state_dir=tmp_path, logger=logging.getLogger("test.gcs"))
    sink = GcsSink("gcs-test", opts, ctx)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def make_events(n: int) -> list[dict[str, Any]]:
    return [{"id": str(ULID()), "action": "user.login", "occurred_at": "2024-05-17T13:59:58Z",
             "organization": {"slug": "acme"}} for _ in range(n)]


async def test_each_batch_is_one_gzipped_object_named_by_the_template(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """Three batches give three objects under the rendered names, holding every id in order."""
    bucket = await make_bucket(emulator.endpoint_url)
    batches = [Batch(make_events(n)) for n in (100, 1, 250)]
    async with gcs_sink(tmp_path, emulator.endpoint_url, bucket) as sink:
        for batch in batches:
            await sink.send(batch)
    stored = await objects(emulator.endpoint_url, bucket)
    assert set(stored) == {object_key(DEFAULT_KEY_TEMPLATE, b) for b in batches}
    for batch in batches:
        name = object_key(DEFAULT_KEY_TEMPLATE, batch)
        assert name.startswith("audit/2024/05/17/13/")
        assert ids_in(stored[name]) == batch.ids


async def test_a_redelivered_batch_overwrites_its_object(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """The same batch sent twice (crash redelivery) leaves one identical object."""
    bucket = await make_bucket(emulator.endpoint_url)
    batch = Batch(make_events(30))
    async with gcs_sink(tmp_path, emulator.endpoint_url, bucket,
                        key_template="{sink}/{first_id}-{last_id}.jsonl.gz") as sink:
        await sink.send(batch)
        first = await objects(emulator.endpoint_url, bucket)
        await sink.send(Batch(list(batch.events)))
        second = await objects(emulator.endpoint_url, bucket)
    assert list(second) == [f"gcs-test/{batch.first_id}-{batch.last_id}.jsonl.gz"]
    assert first == second


async def test_a_different_batch_with_the_same_ends_never_replaces_an_object(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """Same first and last ids, other members (a redelivery after a scope or redaction
    change), or ids whose '-' make the ends ambiguous: every batch keeps its own object."""
    bucket = await make_bucket(emulator.endpoint_url)
    events = make_events(3)
    hyphens = [dict(events[0], id=i) for i in ("a-b", "c", "a", "b-c")]
    batches = [Batch(events), Batch([events[0], events[2]]), Batch(hyphens[:2]),
               Batch(hyphens[2:])]
    async with gcs_sink(tmp_path, emulator.endpoint_url, bucket) as sink:
        for batch in batches:
            await sink.send(batch)
    stored = await objects(emulator.endpoint_url, bucket)
    assert sorted(map(ids_in, stored.values())) == sorted(b.ids for b in batches)


async def test_missing_bucket_is_permanent(emulator: GcsEmulator, tmp_path: Path) -> None:
    """A bucket that does not exist: PermanentError naming it (the batch is dead-lettered)."""
    async with gcs_sink(tmp_path, emulator.endpoint_url, "no-such-bucket-here") as sink:
        with pytest.raises(PermanentError, match="no-such-bucket-here"):
            await sink.send(Batch(make_events(2)))


async def test_store_down_then_back_loses_nothing(tmp_path: Path) -> None:
    """Emulator killed: RetryableError; restarted: the same batch is stored."""
    server = GcsEmulator(tmp_path / "gcs")
    server.start()
    try:
        bucket = await make_bucket(server.endpoint_url)
        before = Batch(make_events(10))
        during = Batch(make_events(10))
        async with gcs_sink(tmp_path, server.endpoint_url, bucket) as sink:
            await sink.send(before)
            server.kill()
            with pytest.raises(RetryableError):
                await sink.send(during)
            server.start()
            await sink.send(during)  # what the core does: send the failed batch again
        stored = await objects(server.endpoint_url, bucket)
        assert sorted(i for body in stored.values() for i in ids_in(body)) == sorted(
            before.ids + during.ids
        )
    finally:
        server.stop()


async def test_integrity_digests_are_objects_under_digests_and_verify(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """A sealed stream as the daemon hands it (runs of events, each digest a batch of its
    own): every digest becomes its own gzipped object under digests/, the events go to
    the template's objects, and `auditshipd verify` passes on the downloaded bucket;
    with one event object deleted it reports the gap."""
    key = generate_key(tmp_path / "signing.key")
    stream = build_stream(key, 40, stream="gcs-test")
    bucket = await make_bucket(emulator.endpoint_url)
    async with gcs_sink(tmp_path, emulator.endpoint_url, bucket) as sink:
        for batch in object_batches(stream):
            await sink.send(batch)
    stored = await objects(emulator.endpoint_url, bucket)
    digests = sorted(n for n in stored if n.startswith("digests/"))
    assert len(digests) == sum(map(stream.is_digest, range(len(stream.lines)))) >= 8
    assert all(n.endswith(".jsonl.gz") for n in digests)
    assert all(json.loads(gzip.decompress(stored[n]))["action"] == "auditshipd.digest"
               for n in digests)
    out = verify_download(stored, tmp_path / "download", f"{tmp_path / 'signing.key'}.pub",
                          stream.verify_at)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "40 events (seq 1-40)" in out.stdout
    victim = sorted(n for n in stored if n.startswith("audit/"))[2]
    del stored[victim]
    bad = verify_download(stored, tmp_path / "download2", f"{tmp_path / 'signing.key'}.pub",
                          stream.verify_at)
    assert bad.returncode == 1 and "gap: missing events" in bad.stdout


async def test_gzipped_objects_are_stored_with_content_encoding_gzip(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """gzip = true: the object's contentEncoding is gzip (readers and GCS's decompressive
    transcoding rely on it); gzip = false: no contentEncoding."""
    bucket = await make_bucket(emulator.endpoint_url)
    async with gcs_sink(tmp_path, emulator.endpoint_url, bucket,
                        key_template="{sink}/gz/{first_id}-{last_id}.jsonl.gz") as sink:
        await sink.send(Batch(make_events(3)))
    async with gcs_sink(tmp_path, emulator.endpoint_url, bucket, gzip=False,
                        key_template="{sink}/plain/{first_id}-{last_id}.jsonl") as sink:
        await sink.send(Batch(make_events(3)))
    async with aiohttp.ClientSession() as s, s.get(
        f"{emulator.endpoint_url}/storage/v1/b/{bucket}/o"
    ) as resp:
        items = (await resp.json())["items"]
    encodings = {item["name"].split("/")[1]: item.get("contentEncoding") for item in items}
    assert encodings == {"gz": "gzip", "plain": None}


async def test_a_retry_after_a_lost_answer_is_delivered_in_a_bucket_with_retention(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """A bucket with a retention policy refuses to overwrite an object (403). The upload
    lands and its answer is lost: the retry is create-only (ifGenerationMatch=0), meets
    412 and counts as delivered, and so does every later replay; one object, the batch's."""
    bucket = await make_bucket(emulator.endpoint_url)
    batch = Batch(make_events(20))
    async with StoreProxy(emulator.endpoint_url, "gcs") as proxy:
        proxy.lose_answers = 1
        async with gcs_sink(tmp_path, proxy.url, bucket) as sink:
            with pytest.raises(RetryableError):
                await sink.send(batch)
            await sink.send(batch)
            await sink.send(Batch(list(batch.events)))  # a replay of the dead letters
        assert len(proxy.uploads) == 3
    stored = await objects(emulator.endpoint_url, bucket)
    assert list(stored) == [object_key(DEFAULT_KEY_TEMPLATE, batch)]
    assert ids_in(stored[object_key(DEFAULT_KEY_TEMPLATE, batch)]) == batch.ids


async def test_an_object_is_never_replaced_by_a_create_only_upload(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """With {digest} the sink asks GCS to create, never to replace: an object already under
    the batch's name stays as it is (412; equal names hold equal bytes)."""
    bucket = await make_bucket(emulator.endpoint_url)
    batch = Batch(make_events(5))
    name = object_key(DEFAULT_KEY_TEMPLATE, batch)
    async with aiohttp.ClientSession() as s, s.post(
        f"{emulator.endpoint_url}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "media", "name": name}, data=b"already there",
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with StoreProxy(emulator.endpoint_url, "gcs") as proxy:
        proxy.stored.add(name)  # what the emulator cannot tell: it is there
        async with gcs_sink(tmp_path, proxy.url, bucket) as sink:
            await sink.send(batch)
        assert proxy.uploads == [name]
    assert await objects(emulator.endpoint_url, bucket) == {name: b"already there"}


async def test_without_digest_a_retry_is_delivered_only_onto_the_same_bytes(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """A template without {digest} overwrites (no precondition). In a bucket with a
    retention policy the retry after a lost answer meets 403: delivered, since the object
    there holds the same bytes; a different batch under the same name stays refused."""
    bucket = await make_bucket(emulator.endpoint_url)
    events = make_events(3)
    batch, other = Batch(events), Batch([events[0], events[2]])
    async with StoreProxy(emulator.endpoint_url, "gcs") as proxy:
        proxy.lose_answers = 1
        async with gcs_sink(tmp_path, proxy.url, bucket,
                            key_template="{first_id}-{last_id}.jsonl.gz") as sink:
            with pytest.raises(RetryableError):
                await sink.send(batch)
            await sink.send(batch)
            with pytest.raises(PermanentError, match="403.*put {digest} in key_template"):
                await sink.send(other)
    stored = await objects(emulator.endpoint_url, bucket)
    assert [ids_in(body) for body in stored.values()] == [batch.ids]
