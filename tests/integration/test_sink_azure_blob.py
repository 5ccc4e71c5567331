"""The azure_blob sink against Azurite (the npm package), started by the tests on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobSasPermissions, ContainerSasPermissions, generate_container_sas
from azure.storage.blob.aio import BlobServiceClient
from tests.helpers.integrity_stream import build_stream, object_batches, verify_download
from tests.helpers.store_proxy import StoreProxy
from tests.servers.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.servers.mosquitto import make_test_pki
from ulid import ULID

from auditshipd.errors import PermanentError, RetryableError
from auditshipd.integrity.keys import generate_key
from auditshipd.plugin import Batch, SinkContext
from auditshipd.sinks.azure_blob import AzureBlobOptions, AzureBlobSink, validate_options
from auditshipd.sinks.key_template import DEFAULT_KEY_TEMPLATE, object_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite per test run (in memory); each test makes its own container."""
    server = Azurite(tmp_path_factory.mktemp("azurite"), in_memory=True)
    server.start()
    yield server
    server.stop()


async def make_container(server: Azurite, name: str | None = None) -> str:
    name = name or f"audit-{str(ULID()).lower()}"
    async with BlobServiceClient.from_connection_string(server.connection_string) as svc:
        await svc.create_container(name)
    return name


async def blobs(server: Azurite, container: str) -> dict[str, tuple[bytes, Any]]:
    """Every blob of ``container``: name -> (stored bytes, properties)."""
    out = {}
    async with BlobServiceClient.from_connection_string(server.connection_string) as svc:
        client = svc.get_container_client(container)
        async for item in client.list_blobs(include=["metadata"]):
            # decompress=False: the stored bytes, not what a browser would show.
            data = await (await client.download_blob(item.name, decompress=False)).readall()
            out[item.name] = (data, item)
    return out


def ids_in(body: bytes) -> list[str]:
    return [json.loads(line)["id"] for line in gzip.decompress(body).splitlines()]


@contextlib.asynccontextmanager
async def azure_sink(tmp_path: Path, container: str, **options: Any) -> AsyncIterator[AzureBlobSink]:
    opts = AzureBlobOptions(container=container, timeout=5.0, **options)
    validate_options(opts)
    ctx = SinkContext(name="azure-test", state_dir=tmp_path,
                      logger=logging.getLogger("test.azure_blob"))
    sink = AzureBlobSink("azure-test", opts, ctx)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def make_events(n: int) -> list[dict[str, Any]]:
    return [{"id": str(ULID()), "action": "user.login", "occurred_at": "2024-05-17T13:59:58Z",
             "organization": {"slug": "acme"}} for _ in range(n)]


def sas_token(container: str, permission: Any) -> str:
    return generate_container_sas(
        ACCOUNT, container, account_key=ACCOUNT_KEY, permission=permission,
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )


async def test_each_batch_is_one_gzipped_block_blob_named_by_the_template(
    azurite: Azurite, tmp_path: Path
) -> None:
    """Three batches (account key auth) give three gzipped block blobs under the rendered
    names, holding every id in order, with their metadata."""
    container = await make_container(azurite)
    batches = [Batch(make_events(n)) for n in (100, 1, 250)]
    async with azure_sink(tmp_path, container, endpoint_url=azurite.endpoint_url,
                          account_key=ACCOUNT_KEY) as sink:
        for batch in batches:
            await sink.send(batch)
    stored = await blobs(azurite, container)
    assert set(stored) == {object_key(DEFAULT_KEY_TEMPLATE, b) for b in batches}
    for batch in batches:
        name = object_key(DEFAULT_KEY_TEMPLATE, batch)
        assert name.startswith("audit/2024/05/17/13/")
        body, props = stored[name]
        assert ids_in(body) == batch.ids
        assert props.blob_type == "BlockBlob"
        assert props.content_settings.content_encoding == "gzip"
        assert props.content_settings.content_type == "application/x-ndjson"
        assert props.metadata == {"events": str(len(batch)), "first_id": batch.first_id,
                                  "last_id": batch.last_id}


async def test_a_redelivered_batch_overwrites_its_blob(azurite: Azurite, tmp_path: Path) -> None:
    """The same batch sent twice (crash redelivery) leaves one blob with identical bytes."""
    container = await make_container(azurite)
    batch = Batch(make_events(30))
    async with azure_sink(tmp_path, container, connection_string=azurite.connection_string,
                          key_template="{sink}/{first_id}-{last_id}.jsonl.gz") as sink:
        await sink.send(batch)
        first = await blobs(azurite, container)
        await sink.send(Batch(list(batch.events)))
        second = await blobs(azurite, container)
    assert list(second) == [f"azure-test/{batch.first_id}-{batch.last_id}.jsonl.gz"]
    assert first[next(iter(first))][0] == second[next(iter(second))][0]


async def test_a_different_batch_with_the_same_ends_never_replaces_a_blob(
    azurite: Azurite, tmp_path: Path
) -> None:
    """Same first and last ids, other members (a redelivery after a scope or redaction
    change), or ids whose '-' make the ends ambiguous: every batch keeps its own blob."""
    container = await make_container(azurite)
    events = make_events(3)
    hyphens = [dict(events[0], id=i) for i in ("a-b", "c", "a", "b-c")]
    batches = [Batch(events), Batch([events[0], events[2]]), Batch(hyphens[:2]),
               Batch(hyphens[2:])]
    async with azure_sink(tmp_path, container, connection_string=azurite.connection_string) as sink:
        for batch in batches:
            await sink.send(batch)
    stored = await blobs(azurite, container)
    assert sorted(ids_in(body) for body, _ in stored.values()) == sorted(b.ids for b in batches)


async def test_without_gzip_the_blob_is_plain_json_lines(azurite: Azurite, tmp_path: Path) -> None:
    """gzip = false: the blob holds the JSON Lines as sent, with no Content-Encoding."""
    container = await make_container(azurite)
    batch = Batch(make_events(5))
    async with azure_sink(tmp_path, container, connection_string=azurite.connection_string,
                          gzip=False, key_template="{first_id}-{last_id}.jsonl") as sink:
        await sink.send(batch)
    ((body, props),) = (await blobs(azurite, container)).values()
    assert [json.loads(line)["id"] for line in body.splitlines()] == batch.ids
    assert not props.content_settings.content_encoding


async def test_a_sas_token_with_write_permission_delivers(azurite: Azurite, tmp_path: Path) -> None:
    """A container SAS (create + write) is enough: the blob is stored."""
    container = await make_container(azurite)
    token = sas_token(container, ContainerSasPermissions(create=True, write=True))
    batch = Batch(make_events(3))
    async with azure_sink(tmp_path, container, endpoint_url=azurite.endpoint_url,
                          sas_token="?" + token) as sink:
        await sink.send(batch)
    ((body, _),) = (await blobs(azurite, container)).values()
    assert ids_in(body) == batch.ids


async def test_a_read_only_sas_is_permanent_and_never_shown(
    azurite: Azurite, tmp_path: Path
) -> None:
    """A SAS without write permission: PermanentError (403) whose text holds no signature."""
    container = await make_container(azurite)
    token = sas_token(container, BlobSasPermissions(read=True))
    signature = dict(p.split("=", 1) for p in token.split("&"))["sig"]
    async with azure_sink(tmp_path, container, endpoint_url=azurite.endpoint_url,
                          sas_token=token) as sink:
        with pytest.raises(PermanentError, match="403") as err:
            await sink.send(Batch(make_events(2)))
    assert signature not in str(err.value) and token not in str(err.value)
    assert await blobs(azurite, container) == {}


async def test_a_wrong_account_key_is_permanent_and_never_shown(
    azurite: Azurite, tmp_path: Path
) -> None:
    """The wrong key: PermanentError naming the credentials, without the key."""
    container = await make_container(azurite)
    wrong = "d3Jvbmcta2V5LWZvci1henVyaXRlLXRlc3RzLW9ubHk="
    async with azure_sink(tmp_path, container, endpoint_url=azurite.endpoint_url,
                          account_key=wrong) as sink:
        with pytest.raises(PermanentError, match="credentials") as err:
            await sink.send(Batch(make_events(2)))
    assert wrong not in str(err.value)


async def test_missing_container_is_permanent(azurite: Azurite, tmp_path: Path) -> None:
    """A container that does not exist: PermanentError naming it (the batch is dead-lettered)."""
    async with azure_sink(tmp_path, "no-such-container",
                          connection_string=azurite.connection_string) as sink:
        with pytest.raises(PermanentError, match="no-such-container"):
            await sink.send(Batch(make_events(2)))


async def test_service_down_then_back_loses_nothing(tmp_path: Path) -> None:
    """Azurite stopped: RetryableError; restarted (blobs on disk): the same batch is stored."""
    server = Azurite(tmp_path / "azurite")
    server.start()
    try:
        container = await make_container(server)
        before = Batch(make_events(10))
        during = Batch(make_events(10))
        async with azure_sink(tmp_path, container,
                              connection_string=server.connection_string) as sink:
            await sink.send(before)
            # SIGTERM: Azurite saves its blob index on exit; after a SIGKILL it comes back
            # without what it had not saved yet (its own durability, not the sink's).
            server.stop()
            with pytest.raises(RetryableError):
                await sink.send(during)
            server.start()
            await sink.send(during)  # what the core does: send the failed batch again
        stored = await blobs(server, container)
        assert sorted(i for body, _ in stored.values() for i in ids_in(body)) == sorted(
            before.ids + during.ids
        )
    finally:
        server.stop()


async def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    """Azurite over HTTPS: delivers with its CA in ca_file; with the system CAs only the
    unknown certificate is refused (retryable: fixing the trust store resumes delivery)."""
    ca, cert, key = make_test_pki(tmp_path / "pki")
    server = Azurite(tmp_path / "azurite", in_memory=True, tls=(cert, key))
    server.start()
    try:
        container = f"audit-{str(ULID()).lower()}"
        async with BlobServiceClient.from_connection_string(
            server.connection_string, connection_verify=str(ca)
        ) as svc:
            await svc.create_container(container)
        batch = Batch(make_events(4))
        async with azure_sink(tmp_path, container, endpoint_url=server.endpoint_url,
                              account_key=ACCOUNT_KEY, ca_file=str(ca)) as sink:
            await sink.send(batch)
        async with azure_sink(tmp_path, container, endpoint_url=server.endpoint_url,
                              account_key=ACCOUNT_KEY) as sink:
            with pytest.raises(RetryableError, match="(?i)certificate"):
                await sink.send(Batch(make_events(1)))
        async with BlobServiceClient.from_connection_string(
            server.connection_string, connection_verify=str(ca)
        ) as svc:
            names = [b.name async for b in svc.get_container_client(container).list_blobs()]
        assert names == [object_key(DEFAULT_KEY_TEMPLATE, batch)]
    finally:
        server.stop()


async def test_an_endpoint_that_never_answers_times_out_retryably(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: RetryableError within the
    timeout (the SDK's read timeout, bounded again by the sink), not a hang."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        opts = AzureBlobOptions(container="audit", account_key=ACCOUNT_KEY, timeout=1.0,
                                endpoint_url=f"http://127.0.0.1:{port}/{ACCOUNT}")
        validate_options(opts)
        sink = AzureBlobSink("azure-test", opts, SinkContext(
            name="azure-test", state_dir=tmp_path, logger=logging.getLogger("test")))
        started = time.monotonic()
        try:
            with pytest.raises(RetryableError):
                await sink.send(Batch(make_events(2)))
        finally:
            await sink.close()
        assert time.monotonic() - started < 8
        assert held, "the sink never connected"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_integrity_digests_are_blobs_under_digests_and_verify(
    azurite: Azurite, tmp_path: Path
) -> None:
    """A sealed stream as the daemon hands it, gzip off: every digest becomes its own
    blob digests/<id>.jsonl, the events go to the template's blobs, and `auditshipd
    verify` passes on the downloaded container; with one event blob deleted it reports
    the gap."""
    key = generate_key(tmp_path / "signing.key")
    stream = build_stream(key, 40, stream="azure-test")
    container = await make_container(azurite)
    async with azure_sink(tmp_path, container, connection_string=azurite.connection_string,
                          gzip=False, key_template="audit/{first_id}-{last_id}.jsonl") as sink:
        for batch in object_batches(stream):
            await sink.send(batch)
    stored = {name: body for name, (body, _) in (await blobs(azurite, container)).items()}
    digests = sorted(n for n in stored if n.startswith("digests/"))
    assert len(digests) == sum(map(stream.is_digest, range(len(stream.lines)))) >= 8
    assert all(n.endswith(".jsonl") for n in digests)
    assert all(json.loads(stored[n])["action"] == "auditshipd.digest" for n in digests)
    out = verify_download(stored, tmp_path / "download", f"{tmp_path / 'signing.key'}.pub",
                          stream.verify_at)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "40 events (seq 1-40)" in out.stdout
    victim = sorted(n for n in stored if n.startswith("audit/"))[2]
    del stored[victim]
    bad = verify_download(stored, tmp_path / "download2", f"{tmp_path / 'signing.key'}.pub",
                          stream.verify_at)
    assert bad.returncode == 1 and "gap: missing events" in bad.stdout


async def test_a_retried_batch_never_replaces_a_blob(azurite: Azurite, tmp_path: Path) -> None:
    """With {digest} the upload is create-only (If-None-Match: *, which Azurite honours):
    the same batch sent again counts as delivered (409 BlobAlreadyExists), and a blob
    already under the batch's name stays as it is (equal names hold equal bytes)."""
    container = await make_container(azurite)
    batch, other = Batch(make_events(4)), Batch(make_events(2))
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as svc:
        await svc.get_container_client(container).upload_blob(
            object_key(DEFAULT_KEY_TEMPLATE, other), b"already there")
    async with azure_sink(tmp_path, container, connection_string=azurite.connection_string) as sink:
        await sink.send(batch)
        await sink.send(Batch(list(batch.events)))
        await sink.send(other)
    stored = await blobs(azurite, container)
    assert ids_in(stored[object_key(DEFAULT_KEY_TEMPLATE, batch)][0]) == batch.ids
    assert stored[object_key(DEFAULT_KEY_TEMPLATE, other)][0] == b"already there"


@pytest.mark.parametrize("refuse_first", [False, True], ids=["precondition", "hold-first"])
async def test_a_retry_after_a_lost_answer_is_delivered_under_a_legal_hold(
    azurite: Azurite, tmp_path: Path, refuse_first: bool
) -> None:
    """A container with a legal hold refuses to overwrite a blob (409). The upload lands and
    its answer is lost: the retry counts as delivered, and so does a later replay, whether
    the service answers the create-only upload with BlobAlreadyExists or with the hold
    (then the blob's MD5 shows it holds these bytes)."""
    container = await make_container(azurite)
    batch = Batch(make_events(20))
    async with StoreProxy(f"http://{azurite.host}:{azurite.port}", "azure",
                          refuse_first=refuse_first) as proxy:
        proxy.lose_answers = 1
        async with azure_sink(tmp_path, container, account_key=ACCOUNT_KEY,
                              endpoint_url=f"{proxy.url}/{ACCOUNT}") as sink:
            # The answer is lost; the HTTP client sends the PUT again by itself, or the
            # core does after this RetryableError.
            with contextlib.suppress(RetryableError):
                await sink.send(batch)
            await sink.send(batch)
            await sink.send(Batch(list(batch.events)))  # a replay of the dead letters
        assert len(proxy.uploads) >= 3
    stored = await blobs(azurite, container)
    assert list(stored) == [object_key(DEFAULT_KEY_TEMPLATE, batch)]
    assert ids_in(stored[object_key(DEFAULT_KEY_TEMPLATE, batch)][0]) == batch.ids


async def test_without_digest_a_held_blob_takes_only_the_same_bytes(
    azurite: Azurite, tmp_path: Path
) -> None:
    """A template without {digest} overwrites (no precondition). Under a legal hold the
    retry after a lost answer is delivered, since the blob holds the same bytes; a
    different batch under the same name stays refused."""
    container = await make_container(azurite)
    events = make_events(3)
    batch, other = Batch(events), Batch([events[0], events[2]])
    async with StoreProxy(f"http://{azurite.host}:{azurite.port}", "azure") as proxy:
        proxy.lose_answers = 1
        async with azure_sink(tmp_path, container, account_key=ACCOUNT_KEY,
                              endpoint_url=f"{proxy.url}/{ACCOUNT}",
                              key_template="{first_id}-{last_id}.jsonl.gz") as sink:
            with contextlib.suppress(RetryableError):  # the answer is lost
                await sink.send(batch)
            await sink.send(batch)
            with pytest.raises(PermanentError,
                               match="BlobImmutableDueToLegalHold.*put {digest} in key_template"):
                await sink.send(other)
    stored = await blobs(azurite, container)
    assert [ids_in(body) for body, _ in stored.values()] == [batch.ids]
