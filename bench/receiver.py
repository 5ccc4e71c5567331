"""A fast HTTP receiver for the benchmarks, run as its own process.

    .venv/bin/python bench/receiver.py --port 8080 [--latency]

``POST /ingest`` (any path but the ones below): a JSON array of events, or NDJSON,
optionally gzip-compressed; answers 200 ``{}``. Events are counted by decoding each
body with msgspec into a Struct holding only ``id`` (other fields are skipped in C),
so a malformed body is an error (400), never a wrong count. ``id`` may be missing (OCSF
and ECS documents carry it elsewhere); a ``text/plain`` body (CEF) counts its lines,
each of which must start with ``CEF:``.
``--latency``: also decodes ``metadata.t_ns`` (a ``time.time_ns()`` stamp put by the
writer) and records ``arrival_ns - t_ns`` per event.

Control endpoints: ``GET /count`` -> ``{"count", "requests", "bytes", "first_ns",
"last_ns", "errors"}`` (wall-clock ns of the first and last accepted request);
``GET /latency`` -> the recorded latencies in ns (JSON list); ``GET /paths`` -> {path:
[events, distinct ids]} (one path per stream in bench/streams.py); ``GET /reset``.
"""

from __future__ import annotations

import argparse
import gzip
import signal
import sys
import time
from typing import Any

import msgspec
from aiohttp import web

__all__ = ["main"]


class _Id(msgspec.Struct):
    id: str = ""


class _Meta(msgspec.Struct):
    t_ns: int | None = None


class _Timed(msgspec.Struct):
    id: str
    metadata: _Meta | None = None


class State:
    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.dec_array = msgspec.json.Decoder(list[_Timed] if latency else list[_Id])
        self.dec_lines = msgspec.json.Decoder(_Timed if latency else _Id)
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.requests = 0
        self.nbytes = 0
        self.first_ns = 0
        self.last_ns = 0
        self.errors = 0
        self.latencies: list[int] = []
        # events and distinct ids per request path (bench/streams.py: one path per stream)
        self.by_path: dict[str, int] = {}
        self.ids_by_path: dict[str, set[str]] = {}

    def stats(self) -> dict[str, Any]:
        return {"count": self.count, "requests": self.requests, "bytes": self.nbytes,
                "first_ns": self.first_ns, "last_ns": self.last_ns, "errors": self.errors}


def make_app(state: State) -> web.Application:
    enc = msgspec.json.Encoder()

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time_ns()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        try:
            if request.content_type == "text/plain":
                events = body.splitlines()
                if not all(line.startswith(b"CEF:") for line in events):
                    raise msgspec.DecodeError("a text/plain line is not CEF")
            elif body[:1] == b"[":
                events = state.dec_array.decode(body)
            else:
                events = state.dec_lines.decode_lines(body)
        except msgspec.DecodeError as exc:
            state.errors += 1
            return web.Response(status=400, text=f"bad body: {exc}")
        state.count += len(events)
        path = request.path
        state.by_path[path] = state.by_path.get(path, 0) + len(events)
        if events and not isinstance(events[0], bytes):
            state.ids_by_path.setdefault(path, set()).update(e.id for e in events)
        state.requests += 1
        state.nbytes += len(body)
        if not state.first_ns:
            state.first_ns = now
        state.last_ns = now
        if state.latency:
            lat = state.latencies
            for e in events:
                if e.metadata is not None and e.metadata.t_ns is not None:
                    lat.append(now - e.metadata.t_ns)
        return web.Response(body=b"{}", content_type="application/json")

    async def count(request: web.Request) -> web.Response:
        return web.Response(body=enc.encode(state.stats()), content_type="application/json")

    async def paths(request: web.Request) -> web.Response:
        """{path: [events, distinct ids]}"""
        out = {p: [n, len(state.ids_by_path.get(p, ()))] for p, n in state.by_path.items()}
        return web.Response(body=enc.encode(out), content_type="application/json")

    async def latency(request: web.Request) -> web.Response:
        return web.Response(body=enc.encode(state.latencies), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/count", count)
    app.router.add_get("/latency", latency)
    app.router.add_get("/paths", paths)
    app.router.add_get("/reset", reset)
    app.router.add_post("/{tail:.*}", ingest)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--latency", action="store_true", help="record arrival - metadata.t_ns")
    args = ap.parse_args(argv)
    state = State(args.latency)

    def _term(*_: object) -> None:
        raise web.GracefulExit()

    signal.signal(signal.SIGTERM, _term)
    web.run_app(make_app(state), host=args.host, port=args.port, access_log=None,
                print=None, reuse_address=True, shutdown_timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
