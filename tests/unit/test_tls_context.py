"""HTTP sinks share one verifying TLS context per CA bundle (a context holds the parsed
certificate store: one per sink made a hundred HTTP sinks take 150 MB), and a CA file
changed on disk gets a new context."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from auditshipd.sinks._http_common import tls_context


def _ca(path: Path, name: str) -> None:
    key = path.with_suffix(".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(path), "-days", "1", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)


def test_one_context_per_bundle_and_a_new_one_when_the_file_changes(tmp_path: Path) -> None:
    """The system store's context is shared; a CA file's too, until it is replaced by
    another certificate, whose context then trusts the new one."""
    system = tls_context()
    assert tls_context() is system
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    ca = tmp_path / "ca.pem"
    _ca(ca, "first")
    first = tls_context(str(ca))
    assert tls_context(str(ca)) is first and first is not system
    assert [c["subject"] for c in first.get_ca_certs()] == [((("commonName", "first"),),)]
    _ca(ca, "second-and-longer-name")
    second = tls_context(str(ca))
    assert second is not first and second.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in second.get_ca_certs()] == [
        ((("commonName", "second-and-longer-name"),),)]
