"""Object names of the object-store sinks: ``{digest}`` names an object by its content, so
two different batches never share a name and the same batch always gets the same one."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from auditshipd.delivery.batch import Batch
from auditshipd.errors import ConfigError
from auditshipd.sinks.key_template import (
    DEFAULT_KEY_TEMPLATE,
    FORMAT_KEY_TEMPLATES,
    check_key_template,
    content_digest,
    names_by_content,
    object_key,
    template_for,
)


def ev(id_: str, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "occurred_at": "2024-05-17T13:30:00Z", "action": "x", **extra}


def test_batches_with_the_same_ends_but_other_members_get_other_names() -> None:
    """A batch redelivered after a scope or redaction change can start and end with the same
    ids and hold other events (or the same events redacted otherwise): its object must not
    replace the earlier one."""
    before = Batch([ev("01A"), ev("01B"), ev("01C")])
    fewer = Batch([ev("01A"), ev("01C")])
    redacted = Batch([ev("01A"), ev("01B", actor="[redacted]"), ev("01C")])
    names = {object_key(DEFAULT_KEY_TEMPLATE, b) for b in (before, fewer, redacted)}
    assert len(names) == 3
    for fmt, template in FORMAT_KEY_TEMPLATES.items():
        assert object_key(template, before, fmt=fmt) != object_key(template, fewer, fmt=fmt)


def test_ids_with_hyphens_cannot_make_two_batches_one_name() -> None:
    """'{first_id}-{last_id}' is ambiguous when ids hold '-': ids "a-b" .. "c" and "a" ..
    "b-c" render the same text; the digest keeps the objects apart."""
    one = Batch([ev("a-b"), ev("c")])
    two = Batch([ev("a"), ev("b-c")])
    assert object_key("{first_id}-{last_id}", one) == object_key("{first_id}-{last_id}", two)
    assert object_key(DEFAULT_KEY_TEMPLATE, one) != object_key(DEFAULT_KEY_TEMPLATE, two)


def test_the_same_batch_always_gets_the_same_name() -> None:
    """Built from events or from encoded lines, the same batch gives the same name, and
    {digest} is the first 16 hex digits of the SHA-256 of the JSON Lines body."""
    events = [ev("01A"), ev("01B")]
    batch = Batch(events)
    again = Batch(lines=list(batch.lines))
    key = object_key(DEFAULT_KEY_TEMPLATE, batch)
    assert key == object_key(DEFAULT_KEY_TEMPLATE, again)
    digest = hashlib.sha256(batch.jsonl()).hexdigest()[:16]
    assert key == f"audit/2024/05/17/13/01A-01B-{digest}.jsonl.gz"
    assert content_digest(batch.jsonl()) == digest


def test_the_digest_is_of_the_bytes_written() -> None:
    """With a format, the object holds the formatted lines: the digest is theirs (and a
    body given by the sink is what it names)."""
    source = [b'{"id":"01A","occurred_at":"2024-05-17T13:30:00Z"}']
    formatted = Batch(lines=[b"CEF:0|one"], source=source)
    other = Batch(lines=[b"CEF:0|two"], source=source)
    template = FORMAT_KEY_TEMPLATES["cef"]
    key = object_key(template, formatted, fmt="cef")
    digest = content_digest(b"CEF:0|one\n")
    assert key == f"audit/2024/05/17/13/01A-01A-{digest}.cef.log.gz"
    assert key != object_key(template, other, fmt="cef")
    assert object_key("{digest}", formatted, body=b"x") == content_digest(b"x")


def test_a_template_without_digest_keeps_its_names() -> None:
    """An operator's template without {digest} renders as it always did."""
    batch = Batch([ev("01A"), ev("01B")])
    assert object_key("{sink}/{first_id}-{last_id}.jsonl.gz", batch, "s") == "s/01A-01B.jsonl.gz"
    assert not names_by_content("{sink}/{first_id}-{last_id}.jsonl.gz")
    assert names_by_content(DEFAULT_KEY_TEMPLATE)
    assert all(names_by_content(t) for t in FORMAT_KEY_TEMPLATES.values())
    assert not names_by_content("{first_id}-{last_id}-{{digest}}")


@pytest.mark.parametrize("template", [
    "audit/{yyyy}/{digest}.jsonl.gz",
    "audit/{first_id}-{digest}.jsonl.gz",
    "audit/{first_id}-{last_id}.jsonl.gz",
    DEFAULT_KEY_TEMPLATE,
])
def test_digest_or_both_ids_make_a_valid_template(template: str) -> None:
    """{digest} alone names every distinct body apart; without it both ids are needed."""
    check_key_template(template)


@pytest.mark.parametrize("template", [
    "audit/{yyyy}.jsonl.gz",
    "audit/{first_id}.jsonl.gz",
    "audit/{last_id}-{{digest}}.jsonl.gz",
    "audit/{digest:8}.jsonl.gz",
])
def test_templates_that_could_merge_batches_are_refused(template: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_key_template(template)
    assert err.value.key == "key_template"


def test_a_format_names_the_default_objects() -> None:
    """The default template takes the format's extension and keeps the digest; a
    configuration that spells out the former default (without {digest}) keeps the names
    it had, the format's extension included."""
    assert template_for(DEFAULT_KEY_TEMPLATE, "ocsf") == FORMAT_KEY_TEMPLATES["ocsf"]
    assert template_for("{digest}", "ocsf") == "{digest}"
    former = "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}.jsonl.gz"
    batch = Batch([ev("01A"), ev("01B")])
    assert object_key(template_for(former, "cef"), batch) == "audit/2024/05/17/13/01A-01B.cef.log.gz"
    assert template_for(former, "native") == former
