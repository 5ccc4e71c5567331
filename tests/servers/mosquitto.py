"""A private Mosquitto broker for one test: own port, own config, killable, restartable."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from . import ServerProcess, ServerStartError, free_port, wait_port_accepts

__all__ = ["MOSQUITTO", "MosquittoServer", "make_test_pki"]

MOSQUITTO = os.environ.get("AUDITSHIPD_TEST_MOSQUITTO", "/usr/sbin/mosquitto")


class MosquittoServer(ServerProcess):
    """``mosquitto -c <tmp conf>`` on a free port of 127.0.0.1.

    ``users`` turns anonymous access off and writes a password file with
    ``mosquitto_passwd -b``; ``acl`` is the text of an ``acl_file``; ``tls`` = (CA, cert, key) PEM files
    makes the listener TLS-only (see :func:`make_test_pki`); ``max_packet_size`` limits every
    packet (v5 clients learn it from the CONNACK). ``kill()`` is SIGKILL (no graceful shutdown, no state
    saved); ``start()`` again reuses the same port.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        port: int = 0,
        max_packet_size: int | None = None,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        self.users = users
        self.acl = acl
        self.tls = tls
        self.max_packet_size = max_packet_size
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.workdir / "mosquitto.stderr"
        self.conf_path = self.workdir / "mosquitto.conf"
        self._write_config()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            # Run as whoever runs the tests (as root, mosquitto would switch to the user
            # "mosquitto", who cannot read the password file in the test's temp dir).
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence false",
            # Large queues: a slow test subscriber must not make the broker drop QoS 1.
            # (Not 0 = unlimited: Mosquitto 2.0.11 then drops a client whose publish the
            # ACL denies instead of answering with a PUBACK "not authorized".)
            "max_queued_messages 1000000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.users:
            passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            pwfile = self.workdir / "passwd"
            pwfile.write_text("")
            for user, password in self.users.items():
                res = subprocess.run(
                    [passwd, "-b", str(pwfile), user, password],
                    capture_output=True, timeout=30,
                )
                if res.returncode != 0:
                    raise ServerStartError(
                        f"mosquitto_passwd failed: {res.stderr.decode(errors='replace')}"
                    )
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            cafile, certfile, keyfile = self.tls
            lines += [f"cafile {cafile}", f"certfile {certfile}", f"keyfile {keyfile}"]
        if self.max_packet_size is not None:  # told to v5 clients in the CONNACK
            lines.append(f"max_packet_size {self.max_packet_size}")
        if self.acl is not None:
            aclfile = self.workdir / "acl"
            aclfile.write_text(self.acl)
            lines.append(f"acl_file {aclfile}")
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> None:
        if not Path(MOSQUITTO).exists():
            raise ServerStartError(f"mosquitto not found at {MOSQUITTO}")
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("mosquitto is already running")
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )
        wait_port_accepts(
            self.host, self.port, proc=self.proc, stderr_path=self.stderr_path,
            timeout=timeout, what="mosquitto",
        )

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")


def make_test_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost, with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.pem"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl = shutil.which("openssl") or "/usr/bin/openssl"
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
         "-days", "2", "-subj", "/CN=auditshipd test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext],
    ]
    for args in steps:
        res = subprocess.run([openssl, *map(str, args)], capture_output=True, timeout=60)
        if res.returncode != 0:
            raise ServerStartError(f"openssl failed: {res.stderr.decode(errors='replace')}")
    return ca_crt, crt, key
