"""An HTTP proxy in front of a storage emulator (gcp-storage-emulator, Azurite, moto's S3)
that adds what the emulators lack and the object-store sinks must cope with:

- write-once storage: a bucket with a retention policy (GCS) or a container with an
  immutability policy or a legal hold (Azure) refuses to overwrite an object that is
  there (GCS 403, Azure 409 ``BlobImmutableDueToLegalHold``);
- GCS's ``ifGenerationMatch=0`` precondition (the emulator ignores it): 412 when the
  object is there (Azurite and moto honour ``If-None-Match: *`` themselves, so that goes
  through);
- lost answers: ``lose_answers`` uploads are forwarded, stored by the emulator, and
  their answer never comes back (the connection is closed);
- an S3-compatible store without conditional writes (``refuse_conditional``): 501
  ``NotImplemented`` to a PUT with ``If-None-Match``, as S3 answered before it had them.

Objects count as there once an upload through the proxy was stored (or ``stored`` names
them): the tests write through the proxy only.
"""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import unquote

import aiohttp
from aiohttp import web

__all__ = ["StoreProxy"]

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class StoreProxy:
    """``kind`` "gcs", "azure" or "s3" (path style); ``upstream`` the emulator's base URL
    (scheme, host, port).
    With ``refuse_first`` (Azure) an upload to a name that is there meets the legal hold
    even when it is create-only (a service that checks the hold before the precondition).
    With ``refuse_conditional`` (S3) a conditional upload is not implemented."""

    def __init__(self, upstream: str, kind: Literal["gcs", "azure", "s3"], *,
                 refuse_first: bool = False, refuse_conditional: bool = False):
        self.upstream = upstream.rstrip("/")
        self.kind = kind
        self.refuse_first = refuse_first
        self.refuse_conditional = refuse_conditional
        self.lose_answers = 0
        self.stored: set[str] = set()
        self.uploads: list[str] = []  # names of the uploads that reached the proxy
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> StoreProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # The bodies pass as they came: an S3 upload's Content-Encoding: gzip describes
        # the object (and its Content-MD5 the gzipped bytes), not the transfer.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        name = self._upload_name(request, body)
        if name is not None:
            self.uploads.append(name)
            refusal = self._refusal(request, name)
            if refusal is not None:
                return refusal
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         headers=headers, data=body or None) as upstream:
            answer = await upstream.read()
            status, answer_headers = upstream.status, upstream.headers
        if name is not None and status < 300:
            self.stored.add(name)
            if self.lose_answers > 0:
                self.lose_answers -= 1
                # Stored, and the client never hears of it.
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
        return web.Response(status=status, body=answer, headers={
            k: v for k, v in answer_headers.items() if k.lower() not in _HOP})

    def _upload_name(self, request: web.Request, body: bytes) -> str | None:
        if self.kind == "azure":
            if request.method == "PUT" and "x-ms-blob-type" in request.headers:
                return unquote(request.path.split("/", 3)[3])  # /account/container/blob
            return None
        if self.kind == "s3":
            parts = request.path.split("/", 2)  # /bucket/key (request.path is decoded)
            if request.method == "PUT" and len(parts) == 3 and parts[2]:
                return parts[2]
            return None
        if request.method != "POST" or not request.path.startswith("/upload/storage/v1/b/"):
            return None
        if "name" in request.query:
            return request.query["name"]
        # A multipart upload: the object's resource (JSON) is the first part.
        boundary = request.headers["Content-Type"].split("boundary=", 1)[1].strip('"')
        first = body.split(b"--" + boundary.encode())[1]
        return str(json.loads(first.split(b"\r\n\r\n", 1)[1])["name"])

    def _refusal(self, request: web.Request, name: str) -> web.Response | None:
        if self.kind == "s3":
            if self.refuse_conditional and "If-None-Match" in request.headers:
                text = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NotImplemented"
                        "</Code><Message>A header you provided implies functionality that is "
                        "not implemented</Message><Header>If-None-Match</Header></Error>")
                return web.Response(status=501, text=text, content_type="application/xml")
            return None  # moto answers a create-only upload itself
        if name not in self.stored:
            return None
        if self.kind == "gcs":
            if request.query.get("ifGenerationMatch") == "0":
                return _gcs_error(412, "conditionNotMet", "At least one of the pre-conditions"
                                  " you specified did not hold.")
            return _gcs_error(403, "retentionPolicyNotMet", f"Object '{name}' is subject to "
                              "bucket's retention policy or object retention and cannot be "
                              "deleted or overwritten")
        if self.refuse_first or request.headers.get("If-None-Match") != "*":
            text = ("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>"
                    "BlobImmutableDueToLegalHold</Code><Message>This operation is not "
                    "permitted as the blob is immutable due to one or more legal holds."
                    "</Message></Error>")
            return web.Response(status=409, text=text, content_type="application/xml",
                                headers={"x-ms-error-code": "BlobImmutableDueToLegalHold"})
        return None  # Azurite answers the create-only upload itself


def _gcs_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message,
                                        "errors": [{"reason": reason, "message": message}]}},
                             status=status)
