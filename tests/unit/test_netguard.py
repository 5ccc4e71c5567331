"""SSRF: customer-supplied destinations never reach loopback, private, link-local, multicast
or metadata addresses, at save time and at connect time (DNS changing in between), for
every sink type a self-service stream may be; the operator's allow-list is honoured."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from auditshipd.delivery.batch import Batch
from auditshipd.errors import PermanentError, RetryableError
from auditshipd.netguard import (
    BlockedDestination,
    DestinationPolicy,
    GuardedResolver,
    blocked_reason,
    check_destination,
    check_literal,
)
from auditshipd.plugin import SinkContext
from auditshipd.testing import StaticResolver, WebhookReceiver

BLOCKED = {
    "127.0.0.1": "loopback", "127.255.0.9": "loopback", "10.20.30.40": "private",
    "172.16.0.1": "private", "172.31.255.254": "private", "192.168.0.10": "private",
    "169.254.1.1": "link-local", "169.254.169.254": "cloud metadata", "0.0.0.0": "unspecified",
    "0.1.2.3": "unspecified", "224.0.0.251": "multicast", "239.255.255.250": "multicast",
    "100.100.100.200": "shared", "::1": "loopback", "::": "unspecified",
    "fc00::1": "private", "fdff::1": "private", "fe80::1": "link-local", "ff02::1": "multicast",
    "fd00:ec2::254": "cloud metadata", "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "cloud metadata", "::ffff:10.0.0.1": "private",
    "2002:c0a8:0101::1": "private", "64:ff9b::a9fe:a9fe": "cloud metadata",
    "fec0::1": "site-local", "feff:ffff::1": "site-local",
}


@pytest.mark.parametrize("address,kind", sorted(BLOCKED.items()))
def test_blocked_ranges(address: str, kind: str) -> None:
    """Each refused range is recognised and named (IPv4-mapped and 6to4/NAT64 forms too)."""
    reason = blocked_reason(address)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "172.32.0.1"])
def test_public_addresses_pass(address: str) -> None:
    """Public addresses are not refused."""
    assert blocked_reason(address) is None


def test_policy_entries() -> None:
    """The allow-list takes host names, addresses and CIDR networks; a bad entry is named."""
    policy = DestinationPolicy.parse(["Receiver.Internal.", "10.1.0.0/16", "127.0.0.1", "::1"])
    assert policy.allows_name("receiver.internal")
    assert policy.refusal("x.test", "10.1.2.3") is None
    assert policy.refusal("x.test", "127.0.0.1") is None
    assert "private" in (policy.refusal("x.test", "10.2.0.1") or "")
    assert policy.refusal("receiver.internal", "192.168.1.1") is None
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        DestinationPolicy.parse(["10.0.0.0/33"])
    with pytest.raises(ValueError):
        DestinationPolicy.parse([""])
    with pytest.raises(ValueError, match="'siem intern' is not a host name"):
        DestinationPolicy.parse(["siem intern"])


async def test_an_allowed_host_name_written_in_unicode_is_allowed_as_the_client_sends_it(
    tmp_path: Path,
) -> None:
    """``stream_allow_hosts = ["Bücher.test"]``: the HTTP client looks up and connects to
    ``xn--bcher-kva.test``, which is that allowed name, so the stream delivers."""
    from auditshipd.sinks.http import HttpOptions, HttpSink

    policy = DestinationPolicy.parse(["Bücher.test"])
    assert policy.allows_name("xn--bcher-kva.test") and policy.allows_name("bücher.test")
    with WebhookReceiver() as rx:
        dns = StaticResolver({"xn--bcher-kva.test": ["127.0.0.1"]})
        sink = HttpSink("acme.siem", HttpOptions(url=f"http://bücher.test:{rx.port}/ingest"),
                        _context(tmp_path, GuardedResolver(policy, dns)))
        try:
            await sink.send(_batch())
        finally:
            await sink.close()
        assert rx.ids() == ["e1"]


async def test_save_time_check_resolves_names() -> None:
    """check_destination refuses a name resolving to a refused address (any one of its
    answers), an unresolvable name and a refused literal; a public one passes."""
    resolver = StaticResolver({"evil.test": ["93.184.216.34", "169.254.169.254"],
                               "good.test": ["93.184.216.34"]})
    policy = DestinationPolicy()
    with pytest.raises(BlockedDestination, match="evil.test resolves to 169.254.169.254.*metadata"):
        await check_destination("https://evil.test/x", policy, resolver)
    with pytest.raises(BlockedDestination, match="does not resolve"):
        await check_destination("https://nowhere.test/x", policy, resolver)
    with pytest.raises(BlockedDestination, match="loopback"):
        await check_destination("http://[::ffff:7f00:1]/", policy, resolver)
    await check_destination("https://good.test/x", policy, resolver)
    with pytest.raises(BlockedDestination):
        check_literal("10.0.0.1", policy)


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "siem..example.com"])
async def test_a_host_name_that_cannot_be_encoded_is_refused_with_the_reason(host: str) -> None:
    """A label over 63 characters or an empty one: the system resolver cannot even ask
    (UnicodeError from the IDNA codec): refused as not a valid host name."""
    with pytest.raises(BlockedDestination, match="is not a valid host name"):
        await check_destination(f"https://{host}/in", DestinationPolicy())


def _context(tmp_path: Path, resolver: Any) -> SinkContext:
    return SinkContext(name="acme.siem", state_dir=tmp_path, logger=logging.getLogger("t"),
                       resolver=resolver)


def _batch() -> Batch:
    return Batch([{"id": "e1", "action": "user.login", "occurred_at": "2026-01-01T00:00:00Z"}])


async def test_connect_time_check_when_dns_changes(tmp_path: Path) -> None:
    """The name passed the save-time check (public answer), then DNS answers a loopback
    address: the http sink's connection is refused before a byte is sent, retryably,
    with the reason; the local receiver never sees a request."""
    from auditshipd.sinks.http import HttpOptions, HttpSink

    with WebhookReceiver() as rx:
        dns = StaticResolver({"siem.test": ["93.184.216.34"]})
        await check_destination(f"http://siem.test:{rx.port}/ingest", DestinationPolicy(), dns)
        dns.answers["siem.test"] = ["127.0.0.1"]
        sink = HttpSink("acme.siem", HttpOptions(url=f"http://siem.test:{rx.port}/ingest"),
                        _context(tmp_path, GuardedResolver(DestinationPolicy(), dns)))
        try:
            with pytest.raises(RetryableError, match="127.0.0.1.*loopback"):
                await sink.send(_batch())
        finally:
            await sink.close()
        assert rx.requests == 0
        # The operator allows the loopback network: the same sink now delivers.
        allowed = GuardedResolver(DestinationPolicy.parse(["127.0.0.0/8"]), dns)
        sink = HttpSink("acme.siem", HttpOptions(url=f"http://siem.test:{rx.port}/ingest"),
                        _context(tmp_path, allowed))
        try:
            await sink.send(_batch())
        finally:
            await sink.close()
        assert rx.ids() == ["e1"]


async def test_redirects_to_internal_addresses_are_not_followed(tmp_path: Path) -> None:
    """A destination answering 302 to a metadata-like internal URL: not followed (a
    permanent error naming the redirect); the internal receiver sees nothing."""
    from auditshipd.sinks.http import HttpOptions, HttpSink

    with WebhookReceiver() as internal, WebhookReceiver() as public:
        public.set_script([], default=(302, {"Location": internal.url}, ""))
        dns = StaticResolver({"siem.test": ["93.184.216.34"]})
        policy = DestinationPolicy.parse(["siem.test"])  # the public receiver runs locally
        sink = HttpSink("acme.siem", HttpOptions(url=f"http://siem.test:{public.port}/ingest"),
                        _context(tmp_path, GuardedResolver(policy, dns)))
        dns.answers["siem.test"] = ["127.0.0.1"]
        try:
            with pytest.raises(PermanentError, match="redirects are not followed"):
                await sink.send(_batch())
        finally:
            await sink.close()
        assert public.requests == 1 and internal.requests == 0


@pytest.mark.parametrize("kind", ["splunk_hec", "datadog", "s3"])
async def test_every_stream_type_connects_through_the_guard(tmp_path: Path, kind: str) -> None:
    """Splunk HEC, Datadog and S3 sinks built with the guarded resolver refuse a name
    that resolves to a private or metadata address, with the reason."""
    dns = StaticResolver({"in.test": ["10.9.8.7"]})
    context = _context(tmp_path, GuardedResolver(DestinationPolicy(), dns))
    if kind == "splunk_hec":
        from auditshipd.sinks.splunk_hec import SplunkHecOptions, SplunkHecSink

        sink: Any = SplunkHecSink("s", SplunkHecOptions(url="https://in.test:8088", token="t" * 8), context)
    elif kind == "datadog":
        from auditshipd.sinks.datadog import DatadogOptions, DatadogSink

        sink = DatadogSink("s", DatadogOptions(api_key="k" * 32, url="https://in.test/api/v2/logs"), context)
    else:
        from auditshipd.sinks.s3 import S3Options, S3Sink

        sink = S3Sink("s", S3Options(bucket="b", endpoint_url="http://in.test:9000", region="us-east-1",
                                     access_key_id="AKIDEXAMPLE", secret_access_key="s" * 20), context)
    try:
        with pytest.raises(RetryableError, match="10.9.8.7|private"):
            await asyncio.wait_for(sink.send(_batch()), 30)
    finally:
        await sink.close()
    assert "in.test" in dns.asked
