"""SIEM formats: every corpus action in every format, OCSF against the real schema, CEF
lines parsed back, the action table and its TOML overrides, batches in a format."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from auditshipd.config import parse_config
from auditshipd.delivery.batch import Batch
from auditshipd.errors import ConfigError
from auditshipd.formats.ocsf_actions import ACTIONS, OCSF_VERSION, fallback
from auditshipd.formats.registry import build_encoder, format_batch, reformat
from auditshipd.formats.settings import parse_formats
from auditshipd.redaction.redactor import compile_policy

CORPUS = Path(__file__).parent / "redact_corpus" / "workos_lifecycle.jsonl"
RAW = CORPUS.read_bytes().splitlines()
_encode = msgspec.json.Encoder().encode
# Internal ids of the raw corpus: none may reach any format's output.
_INTERNAL = re.compile(rb"[a-z_]+_01[0-9A-HJKMNP-TV-Z]{24}|00u1a2b3c4d5e6f7g8h9")


def redacted_corpus() -> list[bytes]:
    """The corpus as the default policy lets it out (what every encoder gets)."""
    r = compile_policy(None)
    return [_encode(r(json.loads(line))) for line in RAW]


def event(action: str, **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"id": "01HZX8K2M3N4P5Q6R7S8T9V0ZZ", "action": action,
                         "occurred_at": "2024-05-01T09:00:00.250Z", "version": 1,
                         "actor": {"type": "user", "email": "ada@acme.test", "name": "Ada"},
                         "targets": [{"type": "user", "email": "bob@acme.test"}],
                         "organization": {"slug": "acme", "name": "Acme"},
                         "context": {"location": "203.0.113.7", "user_agent": "curl/8"}}
    e.update(kw)
    return e


@cache
def _ocsf_schema() -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))


@cache
def _validator(class_uid: int) -> jsonschema.Draft202012Validator:
    s = _ocsf_schema()
    name = s.lookup_class_name_from_uid(class_uid=class_uid)
    return jsonschema.Draft202012Validator(s.get_class_schema(class_name=name, profiles=[]))


def assert_valid_ocsf(doc: dict[str, Any]) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in _validator(doc["class_uid"]).iter_errors(doc)]
    assert not errors, (doc.get("message"), errors)


# -- every action of the corpus in every format -----------------------------------------

@pytest.mark.parametrize("fmt", ["ocsf", "ecs", "cef"])
def test_every_corpus_action_in_every_format(fmt):
    """Each corpus event (redacted by the default policy) gives one line in the format,
    naming its action and id, with no internal id of the raw event anywhere in it."""
    lines = redacted_corpus()
    enc = build_encoder(fmt)
    out = enc.encode_lines(lines)
    assert len(out) == len(lines)
    for src, line in zip(lines, out, strict=True):
        e = json.loads(src)
        assert b"\n" not in line
        assert e["action"].encode() in line and e["id"].encode() in line
        assert not _INTERNAL.search(line), line
        if fmt != "cef":
            json.loads(line)


def test_ocsf_corpus_validates_against_the_ocsf_schema():
    """Every corpus event in OCSF validates against the OCSF schema of the version it names
    (no profiles), with the class, type_uid, time and metadata the issue asks for."""
    enc = build_encoder("ocsf")
    classes = set()
    for src in redacted_corpus():
        e = json.loads(src)
        doc = json.loads(enc.encode_lines([src])[0])
        assert_valid_ocsf(doc)
        classes.add(doc["class_uid"])
        assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
        assert doc["category_uid"] == doc["class_uid"] // 1000
        assert doc["metadata"]["version"] == OCSF_VERSION
        assert doc["metadata"]["uid"] == e["id"]
        assert doc["metadata"]["product"] == {"name": "auditshipd", "vendor_name": "auditshipd"}
        assert doc["time"] % 1000 == 0 and doc["time"] > 1_700_000_000_000
        ctx = e.get("context", {})
        assert doc.get("src_endpoint", {}).get("ip") == ctx.get("location")
        assert doc.get("http_request", {}).get("user_agent") == ctx.get("user_agent")
        if e.get("metadata"):
            assert doc["unmapped"]["metadata"] == e["metadata"]
    assert {3001, 3002, 3004, 3005, 3006} <= classes


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_table_action_validates(action):
    """Every row of the built-in action table gives a schema-valid OCSF event of its
    class and activity, with the actor and the target person where the class has them."""
    doc = json.loads(build_encoder("ocsf").encode(event(action)))
    assert_valid_ocsf(doc)
    row = ACTIONS[action]
    assert (doc["class_uid"], doc["activity_id"]) == (row.class_uid, row.activity_id)
    if doc["class_uid"] in (3001, 3005, 3006):
        assert doc["user"]["email_addr"] == "bob@acme.test"
    if doc["class_uid"] == 3002:
        assert doc["user"]["email_addr"] == "ada@acme.test"


def test_ocsf_details():
    """Sign-ins are Authentication with the signing-in user; a failed sign-in is a
    Failure; role changes carry the new role as privileges; times keep milliseconds."""
    enc = build_encoder("ocsf")
    doc = json.loads(enc.encode(event("user.sign_in_failed", targets=[])))
    assert (doc["class_uid"], doc["status_id"], doc["status"]) == (3002, 2, "Failure")
    assert doc["time"] == 1714554000250
    assert doc["actor"]["user"] == {"email_addr": "ada@acme.test", "name": "Ada", "type": "User",
                                    "type_id": 1, "org": {"uid": "acme", "name": "Acme"}}
    doc = json.loads(enc.encode(event("user.role_changed", metadata={"new_role": "admin"})))
    assert doc["privileges"] == ["admin"] and doc["class_uid"] == 3005
    assert_valid_ocsf(doc)


def test_unmapped_action_uses_the_fallback():
    """An action in no table is Entity Management with the activity its last word names
    (Other with that word when it names none), valid OCSF, never an error."""
    enc = build_encoder("ocsf")
    for action, activity in (("invoice.created", 1), ("widget.color_changed", 3),
                             ("thing.frobnicated", 99), ("x", 99), ("", 99)):
        doc = json.loads(enc.encode(event(action, targets=[{"type": "invoice", "name": "INV-1"}])))
        assert (doc["class_uid"], doc["activity_id"]) == (3004, activity), action
        assert_valid_ocsf(doc)
    assert fallback("thing.frobnicated").activity_name == "frobnicated"


def test_toml_overrides_and_extends_the_table():
    """[formats.ocsf.actions] adds a row (invoice.voided -> API Activity Delete) and
    overrides a built-in one; ECS and CEF follow the same table."""
    config = parse_config('''
[formats.ocsf]
product_name = "Acme App"
vendor_name = "Acme"
[formats.ocsf.actions]
"invoice.voided" = { class_uid = 6003, activity_id = 4 }
"user.invited" = { class_uid = 3001, activity_id = 1, severity_id = 2 }
''')
    enc = build_encoder("ocsf", config.formats)
    doc = json.loads(enc.encode(event("invoice.voided", context={})))
    assert (doc["class_uid"], doc["activity_id"], doc["type_uid"]) == (6003, 4, 600304)
    assert doc["api"] == {"operation": "invoice.voided"}
    assert doc["metadata"]["product"] == {"name": "Acme App", "vendor_name": "Acme"}
    assert_valid_ocsf(doc)
    doc = json.loads(enc.encode(event("user.invited")))
    assert (doc["activity_id"], doc["severity_id"]) == (1, 2)
    ecs = json.loads(build_encoder("ecs", config.formats).encode(event("invoice.voided")))
    assert ecs["event"]["category"] == ["configuration"] and ecs["event"]["type"] == ["deletion"]
    cef = build_encoder("cef", config.formats).encode(event("user.invited")).decode()
    assert parse_cef(cef)["severity"] == "3"


@pytest.mark.parametrize("table, key", [
    ({"ocsf": {"actions": {"a.b": {"class_uid": 9999, "activity_id": 1}}}},
     'formats.ocsf.actions."a.b".class_uid'),
    ({"ocsf": {"actions": {"a.b": {"class_uid": 3001, "activity_id": 77}}}},
     'formats.ocsf.actions."a.b".activity_id'),
    ({"ocsf": {"actions": {"a.b": {"class_uid": 3001}}}}, 'formats.ocsf.actions."a.b".activity_id'),
    ({"ocsf": {"actions": {"a.b": {"class_uid": 3001, "activity_id": 1, "x": 1}}}},
     'formats.ocsf.actions."a.b".x'),
    ({"ocsf": {"actions": {"a.b": 5}}}, 'formats.ocsf.actions."a.b"'),
    ({"ocsf": {"colour": "red"}}, "formats.ocsf.colour"),
    ({"cef": {}}, "formats.cef"),
])
def test_bad_overrides_name_file_and_key(table, key):
    """A wrong row in [formats] is a config error naming the file and the key."""
    with pytest.raises(ConfigError) as info:
        parse_formats(table, "a.toml")
    assert info.value.key == key and info.value.file == "a.toml"


@pytest.mark.parametrize("sink, message", [
    ('type = "http"\nurl = "http://x.test/"\nformat = "cef"', "encoding"),
    ('type = "portal"\nformat = "ocsf"', "native"),
    ('type = "otlp"\nurl = "http://x.test:4318"\nformat = "ecs"', "native"),
    ('type = "file"\npath = "x"\nformat = "leef"', "unknown format"),
])
def test_format_that_does_not_fit_the_sink_is_rejected(sink, message):
    """CEF on a JSON-array http body, a portal or otlp sink with a format and an unknown
    format are config errors on sinks[0].format."""
    from auditshipd.plugins.manager import build_plugin_manager, sink_types
    types = sink_types(build_plugin_manager())
    with pytest.raises(ConfigError) as info:
        parse_config(f'[[sinks]]\nname = "s"\n{sink}\n', "c.toml", types)
    assert info.value.key == "sinks[0] (s).format" and message in info.value.reason


# -- ECS ---------------------------------------------------------------------------------

def test_ecs_fields():
    """ECS: @timestamp, event.*, actor and target user, source.ip, user_agent.original,
    organization, metadata under auditshipd.*; categories from the action table."""
    enc = build_encoder("ecs")
    doc = json.loads(enc.encode(event("user.provisioned", metadata={"state": "active"})))
    assert doc["@timestamp"] == "2024-05-01T09:00:00.250Z"
    assert doc["ecs"]["version"].startswith("8.")
    ev = doc["event"]
    assert (ev["action"], ev["category"], ev["type"], ev["outcome"], ev["id"]) == (
        "user.provisioned", ["iam"], ["user", "creation"], "success", "01HZX8K2M3N4P5Q6R7S8T9V0ZZ")
    assert doc["user"] == {"email": "ada@acme.test", "name": "Ada",
                           "target": {"email": "bob@acme.test", "name": "bob@acme.test"}}
    assert doc["source"] == {"ip": "203.0.113.7"}
    assert doc["user_agent"] == {"original": "curl/8"}
    assert doc["organization"] == {"id": "acme", "name": "Acme"}
    assert doc["auditshipd"]["metadata"] == {"state": "active"}
    kinds = {a: json.loads(enc.encode(event(a)))["event"]["category"][0]
             for a in ("user.signed_in", "admin.settings_changed", "dsync.group.user_added")}
    assert kinds == {"user.signed_in": "authentication", "admin.settings_changed": "configuration",
                     "dsync.group.user_added": "iam"}
    assert json.loads(enc.encode(event("user.sign_in_failed")))["event"]["outcome"] == "failure"


# -- CEF ---------------------------------------------------------------------------------

def _split_header(line: str) -> list[str]:
    fields, cur, i = [], [], 0
    while len(fields) < 7:
        c = line[i]
        if c == "\\" and line[i + 1] in "\\|":
            cur.append(line[i + 1])
            i += 2
            continue
        if c == "|":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    return [*fields, line[i:]]


_KEY = re.compile(r"(?:^| )([A-Za-z0-9_]+)=")


def parse_cef(line: str) -> dict[str, Any]:
    """A small CEF parser: the header split on unescaped '|', the extension on the
    ' key=' that starts each pair (an escaped '\\=' never starts one)."""
    assert "\n" not in line and "\r" not in line
    version, vendor, product, dversion, sig, name, sev, ext = _split_header(line)
    starts = []
    for m in _KEY.finditer(ext):
        # '=' preceded by an odd number of backslashes is escaped: not a key.
        j, n = m.end() - 2, 0
        while j >= 0 and ext[j] == "\\":
            n, j = n + 1, j - 1
        if n % 2 == 0:
            starts.append(m)
    values: dict[str, str] = {}
    for k, m in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(ext)
        raw = ext[m.end():end]
        values[m.group(1)] = re.sub(r"\\(.)", lambda x: {"n": "\n", "r": "\r"}.get(x.group(1), x.group(1)), raw)
    return {"version": version, "vendor": vendor, "product": product, "device_version": dversion,
            "signature": sig, "name": name, "severity": sev, "ext": values}


def test_cef_fields():
    """CEF line: header with vendor/product/version, action as signature, OCSF class as
    name; rt, suser, duser, src, requestClientApplication, externalId, cs1..cs4."""
    line = build_encoder("cef").encode(event("user.signed_in", metadata={"mfa": True})).decode()
    c = parse_cef(line)
    assert (c["version"], c["vendor"], c["product"], c["signature"], c["name"], c["severity"]) == (
        "CEF:0", "auditshipd", "auditshipd", "user.signed_in", "Authentication: Logon", "1")
    x = c["ext"]
    assert x["rt"] == "1714554000250" and x["externalId"] == "01HZX8K2M3N4P5Q6R7S8T9V0ZZ"
    assert (x["suser"], x["duser"], x["src"], x["requestClientApplication"]) == (
        "ada@acme.test", "bob@acme.test", "203.0.113.7", "curl/8")
    assert (x["cs1Label"], x["cs1"], x["cs2Label"], x["cs2"]) == (
        "organization", "acme", "organizationName", "Acme")
    assert x["cs3Label"] == "metadata" and json.loads(x["cs3"]) == {"mfa": True}


_nasty = st.text(alphabet=st.sampled_from(list("ab|=\\\n\r x=y") + ["é", "\u2028"]),
                 min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(action=_nasty, name=_nasty, email=_nasty, org=_nasty, note=_nasty, ua=_nasty)
def test_cef_parses_back_with_pipes_equals_backslashes_newlines(action, name, email, org, note, ua):
    """Values holding '|', '=', '\\' and line breaks come back from the CEF line unchanged
    (header fields: line breaks become spaces); the line stays one line."""
    e = event(action, actor={"type": "user", "email": email, "name": name},
              organization={"slug": "acme", "name": org},
              context={"location": "203.0.113.7", "user_agent": ua}, metadata={"note": note})
    line = build_encoder("cef").encode(e).decode()
    c = parse_cef(line)
    assert c["signature"] == action.replace("\n", " ").replace("\r", " ")
    x = c["ext"]
    assert x["act"] == action and x["suser"] == email and x["cs2"] == org
    assert x["requestClientApplication"] == ua
    assert json.loads(x["cs3"]) == {"note": note}


# -- batches in a format -----------------------------------------------------------------

@given(st.lists(st.dictionaries(st.sampled_from(["actor", "targets", "context", "metadata",
                                                 "organization", "occurred_at"]),
                                st.recursive(st.none() | st.booleans() | st.integers()
                                             | st.text(max_size=10),
                                             lambda c: st.lists(c, max_size=3)
                                             | st.dictionaries(st.text(max_size=5), c, max_size=3),
                                             max_leaves=8)),
                max_size=5))
@settings(max_examples=200, deadline=None)
def test_encoders_never_raise_on_odd_events(parts):
    """Whatever shapes a policy lets out (null actor, string targets, nested metadata, an
    unreadable time), every encoder returns one line; OCSF stays schema-valid."""
    for p in parts:
        e = {"id": "e1", "action": "user.updated", **p}
        for fmt in ("ocsf", "ecs", "cef"):
            line = build_encoder(fmt).encode(e)
            assert b"\n" not in line
        assert_valid_ocsf(json.loads(build_encoder("ocsf").encode(e)))


def test_format_batch_keeps_the_redacted_events():
    """A batch in a format ships the format's lines while ids, events and slices come from
    the redacted events; reformat() re-encodes a dead letter's events."""
    lines = redacted_corpus()
    enc = build_encoder("cef")
    b = format_batch(enc, lines)
    assert b.lines[0].startswith(b"CEF:0|") and b.jsonl().count(b"\n") == len(lines)
    assert b.first_id == json.loads(lines[0])["id"] and b.events[1] == json.loads(lines[1])
    part = b[2:4]
    assert part.lines == b.lines[2:4] and part.ids == b.ids[2:4]
    again = reformat(enc, Batch(part.events))
    assert again.lines == part.lines and again.ids == part.ids
    assert reformat(None, part) is part


# -- auditshipd redact --format ------------------------------------------------------------

def test_redact_cli_prints_what_a_sink_would_send(tmp_path):
    """`auditshipd redact --format ocsf` prints the corpus redacted then in OCSF; with
    --sink and no --format it uses that sink's format; no internal id in either output."""
    import subprocess
    import sys

    def run(*args: str) -> bytes:
        out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "redact", *args],
                             input=CORPUS.read_bytes(), capture_output=True, check=True)
        return out.stdout

    docs = [json.loads(x) for x in run("--format", "ocsf").splitlines()]
    assert len(docs) == len(RAW)
    for doc in docs:
        assert_valid_ocsf(doc)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[sinks]]\nname = "s"\ntype = "file"\npath = "x"\nformat = "cef"\n')
    cef = run("-c", str(cfg), "--sink", "s").decode().splitlines()
    assert [parse_cef(x)["ext"]["externalId"] for x in cef] == [json.loads(x)["id"] for x in RAW]
    for out in (run("--format", "ocsf"), run("--format", "ecs"), "\n".join(cef).encode()):
        assert not _INTERNAL.search(out)


@given(st.datetimes(min_value=__import__("datetime").datetime(1900, 1, 1),
                    max_value=__import__("datetime").datetime(2200, 1, 1)))
@settings(max_examples=300, deadline=None)
def test_epoch_ms_fast_path_agrees_with_datetime(when):
    """The writer's own time form (parsed without datetime) gives the same milliseconds
    as datetime does, with and without fractions; an offset form goes the slow way."""
    import datetime as dt

    from auditshipd.formats.event import epoch_ms
    when = when.replace(microsecond=when.microsecond // 1000 * 1000, tzinfo=dt.timezone.utc)
    expected = (when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1)
    assert epoch_ms(when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z") == expected
    assert epoch_ms(when.strftime("%Y-%m-%dT%H:%M:%SZ")) == expected - when.microsecond // 1000
    assert epoch_ms(when.isoformat()) == expected
