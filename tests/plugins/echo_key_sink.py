"""Fixture plugin (a real drop-in file): a sink whose receiver refuses every batch and
echoes the credential it was sent in its answer, as many APIs do ("unknown key ...").
Its ``api_key`` is declared secret."""

from __future__ import annotations

from auditshipd.plugin import PermanentError, SinkOptions, SinkType, hookimpl


class EchoKeyOptions(SinkOptions):
    api_key: str


class EchoKeySink:
    def __init__(self, name, options, context):
        self.options = options

    async def start(self) -> None:
        pass

    async def send(self, batch) -> None:
        raise PermanentError(f"receiver answered 401: unknown key {self.options.api_key}")

    async def close(self) -> None:
        pass


@hookimpl
def register_sink_types():
    return [SinkType("echo_key", EchoKeyOptions, EchoKeySink, "refuses, echoing its key",
                     secrets=("api_key",))]
