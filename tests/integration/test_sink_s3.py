"""The s3 sink against moto's S3 server mode, run as a subprocess on a free port."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from tests.helpers.store_proxy import StoreProxy
from tests.servers.mosquitto import make_test_pki
from tests.servers.moto_s3 import AWS_ENV, MotoS3Server
from ulid import ULID

from auditshipd.delivery.batch import Batch
from auditshipd.errors import PermanentError, RetryableError
from auditshipd.plugin import SinkContext
from auditshipd.sinks.s3 import S3Options, S3Sink, object_key, validate_options

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    server = MotoS3Server(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials through the standard chain (env vars); no real AWS files or IMDS."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def s3_client(server: MotoS3Server) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
        config=BotoConfig(retries={"total_max_attempts": 1}),
    )


def make_bucket(server: MotoS3Server, name: str, **kwargs: Any) -> str:
    s3_client(server).create_bucket(Bucket=name, **kwargs)
    return name


def make_versioned_bucket(server: MotoS3Server, name: str) -> str:
    """A bucket that keeps every version of an object: each write of a name shows."""
    make_bucket(server, name)
    s3_client(server).put_bucket_versioning(
        Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def versions(server: MotoS3Server, bucket: str) -> list[str]:
    """The key of every version stored in ``bucket``."""
    listed = s3_client(server).list_object_versions(Bucket=bucket)
    return [v["Key"] for v in listed.get("Versions", [])]


def make_sink(server: MotoS3Server, tmp_path: Path, **options: Any) -> S3Sink:
    opts = S3Options(**{"endpoint_url": server.endpoint_url, "region": "us-east-1",
                        "timeout": 5.0, **options})
    validate_options(opts)
    ctx = SinkContext(name="s3-test", state_dir=tmp_path, logger=logging.getLogger("test.s3"))
    return S3Sink("s3-test", opts, ctx)


def make_events(n: int, start: datetime | None = None) -> list[dict[str, Any]]:
    start = start or datetime(2024, 5, 17, 13, 59, 58, tzinfo=timezone.utc)
    return [
        {
            "id": str(ULID()),
            "action": "user.login",
            "occurred_at": (start + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
            "organization": {"slug": "acme"},
            "metadata": {"n": i},
        }
        for i in range(n)
    ]


def read_objects(server: MotoS3Server, bucket: str) -> dict[str, list[dict[str, Any]]]:
    client = s3_client(server)
    found: dict[str, list[dict[str, Any]]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            lines = gzip.decompress(body).decode("utf-8").splitlines()
            found[item["Key"]] = [json.loads(line) for line in lines]
    return found


async def test_every_event_of_several_batches_lands_once(moto: MotoS3Server, tmp_path: Path) -> None:
    """Several batches become gzip JSON Lines objects holding every event id exactly once."""
    bucket = make_bucket(moto, "audit-every-event")
    sink = make_sink(moto, tmp_path, bucket=bucket)
    await sink.start()
    sent: list[str] = []
    try:
        for _ in range(5):
            batch = Batch(make_events(137))
            await sink.send(batch)
            sent += batch.ids
    finally:
        await sink.close()
    objects = read_objects(moto, bucket)
    assert len(objects) == 5
    counts = Counter(e["id"] for events in objects.values() for e in events)
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1
    for key, events in objects.items():
        body = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
        digest = hashlib.sha256(body).hexdigest()[:16]
        assert key == f"audit/2024/05/17/13/{events[0]['id']}-{events[-1]['id']}-{digest}.jsonl.gz"
    head = s3_client(moto).head_object(Bucket=bucket, Key=next(iter(objects)))
    assert head["ContentType"] == "application/x-ndjson"
    assert head["ContentEncoding"] == "gzip"


async def test_a_batch_sent_again_is_delivered_without_a_second_write(
    moto: MotoS3Server, tmp_path: Path
) -> None:
    """With {digest} the upload is create-only (If-None-Match: *): the same batch sent
    again (a replay after a crash) meets 412 and counts as delivered. The object is
    written once: a versioned bucket keeps one version of it, not one per replay."""
    bucket = make_versioned_bucket(moto, "audit-replay")
    sink = make_sink(moto, tmp_path, bucket=bucket)
    batch = Batch(make_events(10))
    key = object_key(sink.key_template, batch)
    try:
        await sink.send(batch)
        await sink.send(Batch(list(batch.events)))
    finally:
        await sink.close()
    assert versions(moto, bucket) == [key]
    assert [e["id"] for e in read_objects(moto, bucket)[key]] == batch.ids


async def test_a_retry_after_a_lost_answer_is_delivered_once(
    moto: MotoS3Server, tmp_path: Path
) -> None:
    """The upload lands and its answer is lost (the connection drops): the PUT sent again
    (by the HTTP client itself, else by the core's retry) is create-only, meets 412 and
    counts as delivered, and so does a later replay: one version, the batch's."""
    bucket = make_versioned_bucket(moto, "audit-lost-answer")
    batch = Batch(make_events(20))
    async with StoreProxy(moto.endpoint_url, "s3") as proxy:
        proxy.lose_answers = 1
        sink = make_sink(moto, tmp_path, bucket=bucket, endpoint_url=proxy.url)
        try:
            with contextlib.suppress(RetryableError):
                await sink.send(batch)
            await sink.send(batch)
            await sink.send(Batch(list(batch.events)))
        finally:
            await sink.close()
        key = object_key(sink.key_template, batch)
        assert len(proxy.uploads) >= 3 and set(proxy.uploads) == {key}
    assert versions(moto, bucket) == [key]
    assert [e["id"] for e in read_objects(moto, bucket)[key]] == batch.ids


async def test_an_object_is_never_replaced_by_a_create_only_upload(
    moto: MotoS3Server, tmp_path: Path
) -> None:
    """With {digest} the sink asks S3 to create, never to replace: an object already under
    the batch's name stays as it is (412; equal names hold equal bytes)."""
    bucket = make_bucket(moto, "audit-create-only")
    sink = make_sink(moto, tmp_path, bucket=bucket)
    batch = Batch(make_events(5))
    key = object_key(sink.key_template, batch)
    client = s3_client(moto)
    client.put_object(Bucket=bucket, Key=key, Body=b"already there")
    try:
        await sink.send(batch)
    finally:
        await sink.close()
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"already there"


@pytest.mark.parametrize(
    "options",
    [{"key_template": "audit/{first_id}-{last_id}.jsonl.gz"}, {"create_only": False}],
    ids=["without-digest", "create-only-off"],
)
async def test_without_create_only_an_upload_replaces_the_object(
    moto: MotoS3Server, tmp_path: Path, options: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """A name without {digest}, or a sink with create_only = false (a store that refuses
    If-None-Match), uploads without the precondition: it replaces the object there."""
    bucket = make_bucket(moto, f"audit-{request.node.callspec.id}")
    sink = make_sink(moto, tmp_path, bucket=bucket, **options)
    batch = Batch(make_events(4))
    key = object_key(sink.key_template, batch)
    s3_client(moto).put_object(Bucket=bucket, Key=key, Body=b"already there")
    try:
        await sink.send(batch)
    finally:
        await sink.close()
    assert [e["id"] for e in read_objects(moto, bucket)[key]] == batch.ids


async def test_a_store_without_conditional_writes_holds_batches_until_create_only_is_off(
    moto: MotoS3Server, tmp_path: Path
) -> None:
    """A store that answers a create-only upload with 501 NotImplemented: the batch is
    held (retryable, never dead-lettered) and the error names the way out; with
    create_only = false the same store takes it."""
    bucket = make_bucket(moto, "audit-no-conditional")
    batch = Batch(make_events(3))
    async with StoreProxy(moto.endpoint_url, "s3", refuse_conditional=True) as proxy:
        for create_only in (True, False):
            sink = make_sink(moto, tmp_path, bucket=bucket, endpoint_url=proxy.url,
                             create_only=create_only)
            try:
                if create_only:
                    with pytest.raises(RetryableError, match="set create_only = false"):
                        await sink.send(batch)
                else:
                    await sink.send(batch)
            finally:
                await sink.close()
    assert [e["id"] for e in read_objects(moto, bucket)[object_key(sink.key_template, batch)]] == batch.ids


async def test_a_different_batch_with_the_same_ends_never_replaces_an_object(
    moto: MotoS3Server, tmp_path: Path
) -> None:
    """A batch redelivered after a scope or redaction change starts and ends with the same
    ids but holds other events: it is a second object, the first keeps its events. Ids
    holding '-' ("a-b".."c" and "a".."b-c") cannot make two batches one name either."""
    bucket = make_bucket(moto, "audit-same-ends")
    sink = make_sink(moto, tmp_path, bucket=bucket)
    await sink.start()
    events = make_events(3)
    hyphens = [dict(events[0], id=i) for i in ("a-b", "c", "a", "b-c")]
    try:
        await sink.send(Batch(events))
        await sink.send(Batch([events[0], events[2]]))
        await sink.send(Batch(hyphens[:2]))
        await sink.send(Batch(hyphens[2:]))
    finally:
        await sink.close()
    stored = sorted([e["id"] for e in body] for body in read_objects(moto, bucket).values())
    assert stored == sorted([[e["id"] for e in events], [events[0]["id"], events[2]["id"]],
                             ["a-b", "c"], ["a", "b-c"]])


async def test_content_md5_reaches_an_object_lock_bucket(moto: MotoS3Server, tmp_path: Path) -> None:
    """The server sees Content-MD5: Object Lock buckets refuse PUTs without it."""
    bucket = make_bucket(moto, "audit-locked", ObjectLockEnabledForBucket=True)
    client = s3_client(moto)
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    # Control: without Content-MD5 (and without SDK checksums) the server refuses the PUT.
    bare = boto3.client(
        "s3", endpoint_url=moto.endpoint_url, region_name="us-east-1",
        config=BotoConfig(request_checksum_calculation="when_required"),
    )
    with pytest.raises(bare.exceptions.ClientError) as refused:
        bare.put_object(Bucket=bucket, Key="control", Body=b"x")
    assert "Content-MD5" in str(refused.value)

    sink = make_sink(
        moto, tmp_path, bucket=bucket, object_lock_mode="GOVERNANCE", object_lock_retain_days=2,
        storage_class="STANDARD_IA", server_side_encryption="AES256",
    )
    await sink.start()
    batch = Batch(make_events(20))
    try:
        await sink.send(batch)
    finally:
        await sink.close()
    key = object_key(sink.options.key_template, batch)
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(timezone.utc) + timedelta(days=1)
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    assert [e["id"] for e in read_objects(moto, bucket)[key]] == batch.ids


async def test_missing_bucket_is_permanent(moto: MotoS3Server, tmp_path: Path) -> None:
    """A bucket that does not exist is a PermanentError naming NoSuchBucket."""
    sink = make_sink(moto, tmp_path, bucket="audit-does-not-exist")
    await sink.start()
    try:
        with pytest.raises(PermanentError, match="NoSuchBucket"):
            await sink.send(Batch(make_events(3)))
    finally:
        await sink.close()


async def test_server_down_is_retryable_then_recovers(tmp_path: Path) -> None:
    """Server killed: RetryableError; server back on the same port: the batch lands."""
    server = MotoS3Server(tmp_path / "moto")
    server.start()
    try:
        bucket = make_bucket(server, "audit-outage")
        sink = make_sink(server, tmp_path, bucket=bucket)
        await sink.start()
        try:
            before = Batch(make_events(5))
            await sink.send(before)
            server.kill()
            batch = Batch(make_events(50))
            for _ in range(2):  # a fresh failure and a repeated one on the pooled client
                with pytest.raises(RetryableError):
                    await sink.send(batch)
            server.start()
            make_bucket(server, bucket)  # moto keeps state in memory only
            await sink.send(batch)
        finally:
            await sink.close()
        objects = read_objects(server, bucket)
        ids = [e["id"] for events in objects.values() for e in events]
        assert sorted(ids) == sorted(batch.ids)
    finally:
        server.stop()


async def test_own_credentials_and_guarded_endpoint(moto: MotoS3Server, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-service stream's s3 sink: its own access key (the AWS chain is empty), its
    endpoint reached only through the guarded resolver and never through the
    environment's proxy: refused while the resolved
    address (loopback) is not allowed, delivered once the operator allows it."""
    from auditshipd.netguard import DestinationPolicy, GuardedResolver
    from auditshipd.testing import StaticResolver

    bucket = make_bucket(moto, "audit-self-service")
    for key in AWS_ENV:
        monkeypatch.delenv(key, raising=False)
    for key in ("HTTP_PROXY", "http_proxy"):  # a proxy would connect on the stream's behalf
        monkeypatch.setenv(key, "http://127.0.0.1:9")
    dns = StaticResolver({"localhost": ["127.0.0.1"]})
    options = S3Options(bucket=bucket, endpoint_url=f"http://localhost:{moto.port}",
                        region="us-east-1", timeout=5.0, access_key_id="AKIDACME",
                        secret_access_key="acme-secret-key-0000")
    events = make_events(3)
    for policy, delivered in ((DestinationPolicy(), False),
                              (DestinationPolicy.parse(["127.0.0.1"]), True)):
        ctx = SinkContext(name="acme.archive", state_dir=tmp_path, logger=logging.getLogger("t"),
                          resolver=GuardedResolver(policy, dns))
        sink = S3Sink("acme.archive", options, ctx)
        try:
            if delivered:
                await sink.send(Batch(events))
            else:
                with pytest.raises(RetryableError, match="loopback"):
                    await sink.send(Batch(events))
        finally:
            await sink.close()
    for key in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(key)  # the test's own client reads the bucket directly
    stored = [e["id"] for lines in read_objects(moto, bucket).values() for e in lines]
    assert stored == [e["id"] for e in events]


async def test_a_guarded_sink_ignores_the_configured_endpoint(
        moto: MotoS3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_ENDPOINT_URL_S3 (or ~/.aws/config) names the operator's own store: a
    self-service stream without endpoint_url never goes there; the operator's own s3
    sinks still use it."""
    from auditshipd.netguard import DestinationPolicy, GuardedResolver
    from auditshipd.testing import StaticResolver

    bucket = make_bucket(moto, "audit-operator-store")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://localhost:{moto.port}")
    options = S3Options(bucket=bucket, region="us-east-1", timeout=5.0)
    # Even where the policy would let the address through, the endpoint is not the
    # stream's: its requests go to AWS (which this resolver cannot find).
    dns = StaticResolver({"localhost": ["127.0.0.1"]})
    guarded = SinkContext(name="acme.archive", state_dir=tmp_path, logger=logging.getLogger("t"),
                          resolver=GuardedResolver(DestinationPolicy.parse(["127.0.0.1"]), dns))
    sink = S3Sink("acme.archive", options, guarded)
    try:
        with pytest.raises(RetryableError):
            await sink.send(Batch(make_events(2)))
    finally:
        await sink.close()
    assert read_objects(moto, bucket) == {}
    own = SinkContext(name="archive", state_dir=tmp_path, logger=logging.getLogger("t"))
    sink = S3Sink("archive", options, own)
    events = make_events(2)
    try:
        await sink.send(Batch(events))
    finally:
        await sink.close()
    stored = [e["id"] for lines in read_objects(moto, bucket).values() for e in lines]
    assert stored == [e["id"] for e in events]


async def test_a_guarded_sink_refuses_an_address_endpoint_it_may_not_reach(
        moto: MotoS3Server, tmp_path: Path) -> None:
    """An endpoint that is a loopback address (connected to without any name lookup) is
    refused when the sink starts: nothing reaches it."""
    from auditshipd.netguard import DestinationPolicy, GuardedResolver

    bucket = make_bucket(moto, "audit-loopback-literal")
    options = S3Options(bucket=bucket, endpoint_url=f"http://127.0.0.1:{moto.port}",
                        region="us-east-1", timeout=5.0)
    ctx = SinkContext(name="acme.archive", state_dir=tmp_path, logger=logging.getLogger("t"),
                      resolver=GuardedResolver(DestinationPolicy()))
    sink = S3Sink("acme.archive", options, ctx)
    try:
        with pytest.raises(RetryableError, match="loopback"):
            await sink.send(Batch(make_events(2)))
    finally:
        await sink.close()
    assert read_objects(moto, bucket) == {}


async def test_long_event_ids_keep_keys_and_metadata_within_s3_limits(
    moto: MotoS3Server, tmp_path: Path
) -> None:
    """Ids of 700 characters: S3 refuses a key above 1,024 bytes (KeyTooLongError) and user
    metadata above 2 KB, for the whole batch. The key and the metadata carry a shortened,
    still unique form of such ids; two batches differing only at the end of their ids get
    two objects, and the same batch sent again the same one."""
    bucket = make_bucket(moto, "audit-long-ids")
    sink = make_sink(moto, tmp_path, bucket=bucket)
    await sink.start()
    batches = []
    for tail in ("x", "y"):
        events = make_events(3)
        events[0]["id"] = "a" * 700 + tail
        events[-1]["id"] = "b" * 700 + tail
        batches.append(Batch(events))
    try:
        for batch in (*batches, batches[0]):
            await sink.send(batch)
    finally:
        await sink.close()
    objects = read_objects(moto, bucket)
    assert len(objects) == 2
    assert sorted(e["id"] for events in objects.values() for e in events) == sorted(
        i for b in batches for i in b.ids)
    client = s3_client(moto)
    for key in objects:
        assert len(key.encode()) <= 1024
        meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert sum(len(k) + len(v) for k, v in meta.items()) <= 2048


async def test_https_verifies_the_certificate_with_ca_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store behind a private CA: delivers with that CA in ca_file; without it (and no
    AWS_CA_BUNDLE) the unknown certificate is refused, retryably (fixing the trust store
    resumes delivery)."""
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    ca, cert, key = make_test_pki(tmp_path / "pki")
    server = MotoS3Server(tmp_path / "moto", tls=(cert, key))
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                              verify=str(ca))
        client.create_bucket(Bucket="audit-tls")
        batch = Batch(make_events(4))
        trusted = make_sink(server, tmp_path, bucket="audit-tls", ca_file=str(ca))
        plain = make_sink(server, tmp_path, bucket="audit-tls")
        try:
            await trusted.send(batch)
            with pytest.raises(RetryableError, match="(?i)certificate"):
                await plain.send(Batch(make_events(1)))
        finally:
            await trusted.close()
            await plain.close()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="audit-tls")["Contents"]]
        assert keys == [object_key(trusted.options.key_template, batch)]
    finally:
        server.stop()
