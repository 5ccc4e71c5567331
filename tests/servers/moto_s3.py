"""moto's S3 in server mode, as a subprocess on a free port: stoppable and restartable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import ServerProcess, ServerStartError, free_port, wait_port_accepts

__all__ = ["MotoS3Server"]

# Fake credentials: moto accepts any, and the sink must find them through the standard
# AWS chain (environment variables here).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoS3Server(ServerProcess):
    """``python -m moto.server -H 127.0.0.1 -p PORT`` (HTTPS with ``tls``). State lives in the process:
    ``kill()`` loses every bucket, ``start()`` again gives an empty server on the same port.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int = 0, *, tls: tuple[Path, Path] | None = None):
        self.tls = tls  # (certificate, key): serve HTTPS
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.workdir / "moto.stderr"

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("moto is already running")
        env = {**os.environ, **AWS_ENV}
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port),
                 *(["-c", str(self.tls[0]), "-k", str(self.tls[1])] if self.tls else [])],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                start_new_session=True,
            )
        try:
            wait_port_accepts(
                self.host, self.port, proc=self.proc, stderr_path=self.stderr_path,
                timeout=timeout, what="moto server",
            )
        except ServerStartError:
            self.kill()
            raise
