"""Integrity on, through the daemon: what arrives after kill -9 crashes verifies (with
duplicates), the S3 sink writes its digests as objects under digests/ (moto server), and
events that went through a dead letter and `dlq replay` still verify."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from tests.servers.moto_s3 import AWS_ENV, MotoS3Server

from auditshipd.delivery.deadletters import DeadLetterFile
from auditshipd.integrity.keys import generate_key
from auditshipd.journal.cursor import CursorStore
from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration

AUDITSHIPD = str(Path(sys.executable).parent / "auditshipd")
WRITER = """
import sys
from auditshipd import AuditJournal
j = AuditJournal(sys.argv[1])
for i in range(int(sys.argv[2])):
    assert j.record("user.provisioned", id=f"k-{i:06d}",
                    actor={"type": "user", "email": f"admin{i % 7}@acme.test"},
                    organization={"slug": "acme"}, metadata={"seq": i})
"""


def integrity_table(key: Path, interval: float = 1.0, events: int = 200) -> str:
    return f"""
[integrity]
signing_key = "{key}"
digest_interval = {interval}
digest_events = {events}
"""


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUDITSHIPD, "verify", *args], capture_output=True, text=True,
                          timeout=120)


def last_digest(path: Path) -> dict | None:
    try:
        data = path.read_bytes()
        lines = data[:data.rfind(b"\n") + 1].splitlines()  # the daemon may be mid-line
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        record = json.loads(line)
        if record.get("action") == "auditshipd.digest":
            return record["digest"]
    return None


def test_kill_9_while_shipping_then_verify_passes(ws):
    """A writer writes 4,000 events while the daemon (file sink, integrity on) is killed
    with SIGKILL 8 times at random moments; after a clean run, every id is in the file and
    `auditshipd verify` passes on it, counting the re-sent events as duplicates; the
    cursor file holds the chain position."""
    key = ws.root / "signing.key"
    generate_key(key)
    n = 4000
    ws.write_config(f"""
[[sinks]]
name = "evidence"
type = "file"
path = "{ws.out}"
integrity = true
[sinks.batch]
max_events = 50
timeout = 0.05
""", extra=integrity_table(key))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(ws.journal), str(n)])
    d = ws.daemon()
    rnd = random.Random(4321)
    try:
        for _ in range(8):
            d.start()
            time.sleep(rnd.uniform(0.3, 1.2))  # a random moment is the point of this test
            d.kill()
        assert writer.wait(120) == 0
        d.start()
        d.wait_started()
        wait_for(lambda: len(set(read_jsonl_ids(ws.out))) >= n + 1, 180,
                 message="every event (and digests)")
        wait_for(lambda: (last_digest(ws.out) or {}).get("last_seq") == n, 30,
                 message="a digest covering the last event")
        assert d.terminate() == 0
    finally:
        if d.poll() is None:
            d.kill()
        writer.kill()
    ids = [i for i in read_jsonl_ids(ws.out) if not i.startswith("auditshipd-digest-")]
    assert set(ids) == {f"k-{i:06d}" for i in range(n)}
    at = (last_digest(ws.out) or {})["time"]  # the tail check is another test's subject
    out = verify("--public-key", f"{key}.pub", "--now", at, str(ws.out))
    assert out.returncode == 0, out.stdout[-3000:]
    assert f"{n} events (seq 1-{n})" in out.stdout
    duplicates = len(ids) - n
    assert f"{duplicates} duplicate(s)" in out.stdout
    state = CursorStore(ws.state).load("evidence").integrity
    assert state is not None and state["seq"] == n and state["stream"] == "evidence"


def test_s3_sink_with_integrity_writes_digest_objects(ws, monkeypatch):
    """Daemon -> S3 (moto server), integrity on: events land in event objects, digests as
    their own objects under digests/; the downloaded bucket verifies; an event object
    deleted from the download is reported as a gap."""
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    key = ws.root / "signing.key"
    generate_key(key)
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
integrity = true
[sinks.batch]
max_events = 100
timeout = 0.05
""", extra=integrity_table(key, interval=1.0, events=250))
        ids = write_events(ws.journal, "s3", 1000)

        def download() -> Path:
            target = ws.root / "download"
            for obj in client.list_objects_v2(Bucket="audit").get("Contents", []):
                path = target / obj["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(client.get_object(Bucket="audit", Key=obj["Key"])["Body"].read())
            return target

        def covered() -> bool:
            resp = client.list_objects_v2(Bucket="audit", Prefix="digests/")
            for obj in resp.get("Contents", []):
                body = client.get_object(Bucket="audit", Key=obj["Key"])["Body"].read()
                if json.loads(gzip.decompress(body))["digest"]["last_seq"] == len(ids):
                    return True
            return False

        with ws.daemon(env=AWS_ENV) as d:
            d.wait_started()
            wait_for(covered, 60, message="a digest object covering every event")
            target = download()
            assert d.terminate() == 0
    finally:
        server.stop()
    digests = list((target / "digests").iterdir())
    assert len(digests) >= 4  # by count (250) and by time
    # Verified as of the newest digest: the tail check is another test's subject, and a
    # slow machine may take more than two intervals between the download and here.
    at = max(json.loads(gzip.decompress(p.read_bytes()))["digest"]["time"] for p in digests)
    out = verify("--public-key", f"{key}.pub", "--now", at, str(target))
    assert out.returncode == 0, out.stdout[-3000:]
    assert f"{len(ids)} events" in out.stdout
    victim = sorted((target / "audit").rglob("*.jsonl.gz"))[3]
    first_seq = json.loads(gzip.decompress(victim.read_bytes()).splitlines()[0])["integrity"]["seq"]
    victim.unlink()
    bad = verify("--public-key", f"{key}.pub", "--now", at, str(target))
    assert bad.returncode == 1 and f"gap: missing events: seq {first_seq}-" in bad.stdout


def test_idle_stream_still_gets_digests(ws):
    """No event at all: the sink still delivers a digest per interval (empty ranges,
    chained), and verify passes on them; stopped for longer than two intervals, the
    same file fails with the tail reported."""
    key = ws.root / "signing.key"
    generate_key(key)
    ws.write_config(f"""
[[sinks]]
name = "idle"
type = "file"
path = "{ws.out}"
integrity = true
""", extra=integrity_table(key, interval=0.5))
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 3, 30, message="three digests")
        assert d.terminate() == 0
    records = [json.loads(x) for x in ws.out.read_bytes().splitlines()]
    assert all(r["action"] == "auditshipd.digest" for r in records)
    assert [r["digest"]["last_seq"] for r in records] == [0] * len(records)
    at = records[-1]["digest"]["time"]
    out = verify("--public-key", f"{key}.pub", "--now", at, str(ws.out))
    assert out.returncode == 0, out.stdout
    wait_for(lambda: verify("--public-key", f"{key}.pub", str(ws.out)).returncode == 1, 10,
             message="the tail reported once two intervals passed")
    late = verify("--public-key", f"{key}.pub", str(ws.out))
    assert "tail: newest digest is from" in late.stdout


def test_formatted_sinks_seal_the_bytes_they_deliver(ws):
    """Two file sinks with integrity on, one in OCSF and one in ECS: every event line is
    in the sink's format with the integrity member first, the digests are delivered in
    the same file, and `auditshipd verify` passes on each file; one changed byte in an
    ECS line is reported as modified."""
    key = ws.root / "signing.key"
    generate_key(key)
    outs = {fmt: ws.root / "var" / "out" / f"{fmt}.jsonl" for fmt in ("ocsf", "ecs")}
    sinks = "".join(f"""
[[sinks]]
name = "{fmt}"
type = "file"
path = "{path}"
format = "{fmt}"
integrity = true
[sinks.batch]
max_events = 40
timeout = 0.05
""" for fmt, path in outs.items())
    ws.write_config(sinks, extra=integrity_table(key, interval=1.0, events=100))
    ids = write_events(ws.journal, "fmt", 300)

    def covered(path: Path) -> bool:
        return (last_digest(path) or {}).get("last_seq") == len(ids)

    with ws.daemon() as d:
        d.wait_started()
        for path in outs.values():
            wait_for(lambda p=path: covered(p), 60, message=f"a digest covering {path.name}")
        assert d.terminate() == 0
    for fmt, path in outs.items():
        lines = path.read_bytes().splitlines()
        events = [json.loads(x) for x in lines if b'"auditshipd.digest"' not in x]
        assert len(events) == len(ids)
        assert all(x.startswith(b'{"integrity":{"seq":') for x in lines
                   if b'"auditshipd.digest"' not in x)
        marker = "class_uid" if fmt == "ocsf" else "@timestamp"
        assert all(marker in e for e in events), fmt
        at = (last_digest(path) or {})["time"]  # the tail check is another test's subject
        out = verify("--public-key", f"{key}.pub", "--now", at, str(path))
        assert out.returncode == 0, out.stdout[-3000:]
        assert f"{len(ids)} events (seq 1-{len(ids)})" in out.stdout
    lines = outs["ecs"].read_bytes().splitlines()
    i = next(i for i, x in enumerate(lines) if b'"@timestamp"' in x and i > 10)
    lines[i] = lines[i].replace(b'"@timestamp":"2', b'"@timestamp":"1', 1)
    outs["ecs"].write_bytes(b"\n".join(lines) + b"\n")
    bad = verify("--public-key", f"{key}.pub", "--now", at, str(outs["ecs"]))
    assert bad.returncode == 1 and "modified" in bad.stdout


@pytest.mark.parametrize("fmt", ["ocsf", "native"])
def test_dead_lettered_events_of_a_formatted_sink_replay_sealed(ws, fmt):
    """An OCSF (or native) sink with integrity on: one batch is refused for good and goes
    to the dead-letter file with the sealed lines (native: sealed events) it was handed;
    `dlq replay` delivers exactly those, so `auditshipd verify --allow-reorder` passes on
    the output with every seq once (a replay that encoded the events again, or redacted
    them again into something else, would be 'inserted')."""
    key = ws.root / "signing.key"
    generate_key(key)
    out, script = ws.root / "flaky.jsonl", ws.root / "script.txt"
    script.write_text("ok\npermanent\n")
    ws.write_config(f"""
[[sinks]]
name = "flaky"
type = "flaky"
out = "{out}"
script = "{script}"
format = "{fmt}"
integrity = true
[sinks.batch]
max_events = 20
timeout = 0.05
""", extra=integrity_table(key, interval=1.0, events=1000))
    ids = write_events(ws.journal, "dl", 100)

    def delivered() -> list[dict]:
        if not out.exists():
            return []
        return [json.loads(x) for x in out.read_bytes().splitlines()
                if b'"auditshipd.digest"' not in x]

    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(delivered()) == 80, 60, message="the 80 events not dead-lettered")
        wait_for(lambda: (last_digest(out) or {}).get("last_seq") == 100, 30,
                 message="a digest covering every seq")
        assert d.terminate() == 0
    (letter,) = DeadLetterFile(ws.state, "flaky").read()
    assert len(letter.events) == 20
    if fmt == "ocsf":
        assert letter.lines is not None
        assert all(x.startswith('{"integrity":{"seq":') and '"class_uid"' in x
                   for x in letter.lines)
    else:
        assert all(next(iter(e)) == "integrity" for e in letter.events)
    res = subprocess.run([AUDITSHIPD, "dlq", "replay", "--sink", "flaky", "-c", str(ws.config)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    events = delivered()
    assert sorted(e["metadata"]["uid"] if fmt == "ocsf" else e["id"] for e in events) == ids
    assert sorted(e["integrity"]["seq"] for e in events) == list(range(1, 101))
    at = (last_digest(out) or {})["time"]
    checked = verify("--public-key", f"{key}.pub", "--now", at, "--allow-reorder", str(out))
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "100 events (seq 1-100)" in checked.stdout
