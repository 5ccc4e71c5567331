"""The generic webhook sink against a real receiver: encodings, gzip, auth, signature."""

from __future__ import annotations

import logging

import pytest

from auditshipd.delivery.batch import Batch
from auditshipd.errors import PermanentError, RetryableError
from auditshipd.plugin import SinkContext
from auditshipd.sinks.http import HttpOptions, HttpSink, sign
from auditshipd.testing import WebhookReceiver

pytestmark = pytest.mark.integration


def events(n, prefix="h"):
    return [{"id": f"{prefix}{i}", "action": "user.invited", "occurred_at": "2026-01-01T00:00:00Z",
             "actor": {"email": "a@acme.test"}} for i in range(n)]


async def run_sink(opts: HttpOptions, batch: Batch) -> None:
    sink = HttpSink("web", opts, SinkContext("web", state_dir=".", logger=logging.getLogger("t")))
    await sink.start()
    try:
        await sink.send(batch)
    finally:
        await sink.close()


@pytest.mark.parametrize("encoding", ["json", "ndjson"])
@pytest.mark.parametrize("gzip", [False, True])
async def test_encodings_gzip_bearer_and_signature(encoding, gzip):
    """JSON array or NDJSON, plain or gzip, with bearer token and a valid HMAC signature."""
    with WebhookReceiver(hmac_secret="s3cret-signing-key", bearer_token="tok-1") as rcv:
        opts = HttpOptions(url=rcv.url, encoding=encoding, gzip=gzip, bearer_token="tok-1",
                           hmac_secret="s3cret-signing-key", headers={"X-Tenant": "acme"})
        await run_sink(opts, Batch(events(25)))
        assert rcv.ids() == [f"h{i}" for i in range(25)]
        assert rcv.rejected_auth == 0


@pytest.mark.parametrize("gzip", [False, True])
async def test_413_halves_the_request_until_the_receiver_takes_it(gzip):
    """A receiver (or its proxy) that takes at most 2 KB a request: the batch goes in
    halves, each signed and named for its own events, every event once, in order."""
    with WebhookReceiver(hmac_secret="s3cret-signing-key", max_body_bytes=2_000) as rcv:
        opts = HttpOptions(url=rcv.url, gzip=gzip, hmac_secret="s3cret-signing-key")
        await run_sink(opts, Batch(events(40)))
        assert rcv.ids() == [f"h{i}" for i in range(40)]
        assert rcv.too_large > 0 and rcv.rejected_auth == 0
        assert rcv.batch_headers == [f"{b[0]['id']}-{b[-1]['id']}" for b in rcv.batches]


async def test_a_single_event_over_the_receivers_limit_is_refused_alone():
    """One event larger than the receiver takes: a permanent error for that event only,
    the events before it delivered (the core dead-letters it and sends the rest)."""
    with WebhookReceiver(max_body_bytes=2_000) as rcv:
        batch = events(6)
        batch[3]["actor"]["name"] = "x" * 3_000
        with pytest.raises(PermanentError, match="413 to a single event") as info:
            await run_sink(HttpOptions(url=rcv.url), Batch(batch))
        assert (info.value.accepted, info.value.rejected) == (3, 1)
        assert rcv.ids() == ["h0", "h1", "h2"]


async def test_wrong_secret_is_rejected_permanently():
    """A receiver that rejects the signature (401) makes a permanent error, no secret in it."""
    with WebhookReceiver(hmac_secret="the-right-one") as rcv:
        opts = HttpOptions(url=rcv.url, hmac_secret="the-wrong-one")
        with pytest.raises(PermanentError) as info:
            await run_sink(opts, Batch(events(3)))
        assert "401" in str(info.value) and "the-wrong-one" not in str(info.value)
        assert rcv.ids() == []


@pytest.mark.parametrize(("answer", "kind", "hint"), [
    ((503, {"Retry-After": "7"}), RetryableError, 7.0),
    (429, RetryableError, None),
    (500, RetryableError, None),
    (408, RetryableError, None),
    (400, PermanentError, None),
    (401, PermanentError, None),
    (404, PermanentError, None),
])
async def test_status_classification(answer, kind, hint):
    """429/408/5xx are retryable (Retry-After honoured), other 4xx permanent."""
    with WebhookReceiver() as rcv:
        rcv.set_script([answer])
        with pytest.raises(kind) as info:
            await run_sink(HttpOptions(url=rcv.url), Batch(events(2)))
        if hint is not None:
            assert info.value.retry_after == hint


async def test_refused_connection_is_retryable():
    """Nobody listening: retryable."""
    rcv = WebhookReceiver().start()
    url = rcv.url
    rcv.stop()
    with pytest.raises(RetryableError, match="cannot connect"):
        await run_sink(HttpOptions(url=url, timeout=2), Batch(events(1)))


async def test_timeout_is_retryable():
    """A receiver that never answers: retryable timeout."""
    with WebhookReceiver() as rcv:
        rcv.set_script(["hang"])
        with pytest.raises(RetryableError, match="timeout"):
            await run_sink(HttpOptions(url=rcv.url, timeout=0.5), Batch(events(1)))


async def test_tls_verification_is_on_by_default():
    """https to a server without a trusted certificate fails (verification on)."""
    import ssl
    import subprocess

    # A self-signed certificate made on the spot.
    import tempfile

    from aiohttp import web

    from auditshipd.testing import free_port
    d = tempfile.mkdtemp()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    f"{d}/k.pem", "-out", f"{d}/c.pem", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(f"{d}/c.pem", f"{d}/k.pem")
    app = web.Application()
    got = []

    async def ingest(request):
        got.append(await request.read())
        return web.Response(text="{}")

    app.router.add_post("/in", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        with pytest.raises(RetryableError, match="certificate"):
            await run_sink(HttpOptions(url=f"https://127.0.0.1:{port}/in"), Batch(events(1)))
        assert got == []
        await run_sink(HttpOptions(url=f"https://127.0.0.1:{port}/in", ca_file=f"{d}/c.pem"),
                       Batch(events(1)))
        assert len(got) == 1
    finally:
        await runner.cleanup()


def test_signature_scheme_is_documented_and_stable():
    """The documented scheme: v1=hex(HMAC-SHA256(secret, timestamp + "." + body))."""
    import hashlib
    import hmac

    body = b'[{"id":"x"}]'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1700000000", body) == "v1=" + expected


async def test_control_characters_of_an_answer_are_not_passed_on():
    """A receiver's 503 body with a NUL and an escape sequence: the error message shows
    them as \\xNN (PostgreSQL text refuses a NUL; a terminal obeys an escape)."""
    with WebhookReceiver() as rcv:
        rcv.set_script([(503, {}, "bad\x00gateway \x1b[31mred")])
        with pytest.raises(RetryableError) as info:
            await run_sink(HttpOptions(url=rcv.url), Batch(events(1)))
        message = str(info.value)
        assert "bad\\x00gateway \\x1b[31mred" in message
        assert not any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in message)


async def test_control_characters_in_event_ids_do_not_break_the_batch_header():
    """An id holding CR, LF, NUL or another control character (ids come from applications)
    cannot go into a header as it is (the HTTP client refuses the whole request, and the
    batch went to the dead letters): in X-Auditshipd-Batch those characters are shown as
    %XX; the body carries the ids unchanged."""
    with WebhookReceiver() as rcv:
        batch = events(3)
        batch[0]["id"] = "a\r\nX-Injected: 1"
        batch[-1]["id"] = "z\x00\x7f"
        await run_sink(HttpOptions(url=rcv.url), Batch(batch))
        assert rcv.ids() == [e["id"] for e in batch]
        assert rcv.batch_headers == ["a%0D%0AX-Injected: 1-z%00%7F"]
