"""Azurite's blob service (the npm package ``azurite``) on a free port: killable, restartable."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from . import ServerProcess, ServerStartError, free_port, wait_port_accepts

__all__ = ["ACCOUNT", "ACCOUNT_KEY", "AZURITE_BLOB", "Azurite"]

REPO = Path(__file__).resolve().parents[2]

# Azurite's built-in development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


def _find_azurite_blob() -> str | None:
    # scripts/test.sh installs the npm package under .cache/azurite when it is not on PATH.
    for candidate in (os.environ.get("AUDITSHIPD_TEST_AZURITE"),
                      str(REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"),
                      shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


AZURITE_BLOB = _find_azurite_blob()


class Azurite(ServerProcess):
    """``azurite-blob`` on 127.0.0.1 keeping its blobs in ``workdir/data`` (so a ``kill()``
    then ``start()`` comes back with them), or in memory with ``in_memory=True``.
    ``tls`` = (cert, key) serves HTTPS."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, in_memory: bool = False,
                 tls: tuple[Path, Path] | None = None, port: int = 0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        self.in_memory = in_memory
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.workdir / "azurite.log"

    @property
    def endpoint_url(self) -> str:
        """The path-style account URL, as the sink's ``endpoint_url`` takes it."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol={'https' if self.tls else 'http'};"
                f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.endpoint_url};")

    def start(self, timeout: float = 30.0) -> None:
        if AZURITE_BLOB is None:
            raise ServerStartError(
                "azurite-blob not found: run scripts/test.sh (it installs the npm package "
                "azurite into .cache/azurite) or set AUDITSHIPD_TEST_AZURITE")
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("Azurite is already running")
        args = [AZURITE_BLOB, "--blobHost", self.host, "--blobPort", str(self.port),
                "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
        # The two are exclusive; the working directory stays workdir either way.
        if self.in_memory:
            args.append("--inMemoryPersistence")
        else:
            args += ["--location", str(self.workdir / "data")]
        if self.tls:
            args += ["--cert", str(self.tls[0]), "--key", str(self.tls[1])]
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, start_new_session=True)
        wait_port_accepts(self.host, self.port, proc=self.proc, stderr_path=self.stderr_path,
                          timeout=timeout, what="azurite-blob")

    def log(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")
