"""What a sink's driver holds for a stream with integrity on: the chain, the key and
the digest policy, and the state to commit with the cursor."""

from __future__ import annotations

import time
from typing import Any

from .chain import ChainState, StreamChain
from .digest import DigestPolicy, make_digest
from .keys import SigningKey

__all__ = ["StreamSealer"]


class StreamSealer:
    __slots__ = ("chain", "key", "policy", "seal", "seal_lines")

    def __init__(self, stream: str, key: SigningKey, policy: DigestPolicy,
                 saved: dict[str, Any] | None = None):
        state = ChainState.from_dict(saved) if saved else ChainState(stream=stream)
        if state.stream != stream:  # a renamed sink starts its own chain
            state = ChainState(stream=stream)
        self.chain = StreamChain(state)
        self.key = key
        self.policy = policy
        self.seal = self.chain.seal
        self.seal_lines = self.chain.seal_lines

    def digest_due(self, now: float | None = None) -> bool:
        return self.policy.due(self.chain.sync(), time.time() if now is None else now)

    def seconds_to_digest(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return max(0.0, self.policy.next_due(self.chain.sync()) - now)

    def digest(self, now: float | None = None) -> bytes:
        return make_digest(self.chain.sync(), self.key, self.policy.interval, now)

    def snapshot(self) -> dict[str, Any]:
        """The state to commit with the cursor once everything sealed so far is acked."""
        return self.chain.sync().to_dict()
