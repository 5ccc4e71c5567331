"""A private ``nats-server -js`` for one test: own port, own store dir, killable, restartable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import ServerProcess, ServerStartError, free_port, wait_port_accepts

__all__ = ["NATS_SERVER", "NatsServer"]

NATS_SERVER = os.environ.get("AUDITSHIPD_TEST_NATS_SERVER", "/usr/sbin/nats-server")


class NatsServer(ServerProcess):
    """``nats-server -c <tmp conf>`` with JetStream on a free port of 127.0.0.1.

    JetStream keeps its streams in ``workdir/jetstream`` (file storage), so a
    ``kill()`` then ``start()`` comes back with the stored messages and their ids
    (the de-duplication window survives the restart). ``users`` adds
    user/password authorization; ``tls`` = (CA, cert, key) makes the listener TLS-only;
    ``max_payload`` limits each message (headers and payload).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        port: int = 0,
        max_payload: int | None = None,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.workdir / "nats-server.log"
        self.conf_path = self.workdir / "nats-server.conf"
        lines = [
            f"listen: {self.host}:{self.port}",
            f'jetstream {{ store_dir: "{self.workdir / "jetstream"}" }}',
        ]
        if max_payload is not None:
            lines.append(f"max_payload: {max_payload}")
        if users:
            entries = ", ".join(f'{{user: "{u}", password: "{p}"}}' for u, p in users.items())
            lines.append(f"authorization {{ users: [{entries}] }}")
        if tls is not None:
            ca, cert, key = tls
            lines.append(f'tls {{ ca_file: "{ca}", cert_file: "{cert}", key_file: "{key}" }}')
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        if not Path(NATS_SERVER).exists():
            raise ServerStartError(f"nats-server not found at {NATS_SERVER}")
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("nats-server is already running")
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )
        wait_port_accepts(
            self.host, self.port, proc=self.proc, stderr_path=self.stderr_path,
            timeout=timeout, what="nats-server",
        )

    def log(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")
