"""gcp-storage-emulator (PyPI) as a subprocess on a free port: killable, restartable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import ServerProcess, ServerStartError, free_port, wait_port_accepts

__all__ = ["GcsEmulator"]


class GcsEmulator(ServerProcess):
    """``gcp-storage-emulator start`` on 127.0.0.1, keeping its objects in ``workdir/data``
    (so a ``kill()`` then ``start()`` comes back with them)."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int = 0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.workdir / "gcs-emulator.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the GCS emulator is already running")
        script = (
            "import sys; from gcp_storage_emulator.__main__ import main; sys.exit(main())"
        )
        with open(self.stderr_path, "ab") as err:
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", script, "-d", str(self.workdir / "data"), "start",
                     "--host", self.host, "--port", str(self.port), "--quiet"],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
                )
            except OSError as exc:
                raise ServerStartError(f"cannot run gcp-storage-emulator: {exc}") from None
        wait_port_accepts(self.host, self.port, proc=self.proc, stderr_path=self.stderr_path,
                          timeout=timeout, what="gcp-storage-emulator")

    def log(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")
