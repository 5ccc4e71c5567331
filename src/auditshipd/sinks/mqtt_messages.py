"""The messages the ``mqtt`` sink publishes for a batch, each within what the broker takes.

One message per event, or (``message_per = "batch"``) one JSON Lines message per topic,
cut into several when a v5 broker's Maximum Packet Size (from its CONNACK) calls for it.
Building stops before the first event that cannot be published at all: a topic above
65,535 bytes, or a message of that event alone larger than the broker's maximum packet
(the broker would drop the connection on it, and the batch would fail for ever).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..plugin import Batch

__all__ = ["MAX_TOPIC_BYTES", "Message", "MessageBuilder"]

MAX_TOPIC_BYTES = 65535


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...]
    content_type: str


def _varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


class MessageBuilder:
    """Builds the messages of a batch. ``topic`` renders an event's topic; ``properties``
    gives a message's MQTT v5 properties (``None`` with 3.1.1)."""

    def __init__(self, topic: Callable[[dict[str, Any]], str], *, per_batch: bool, text: bool,
                 qos: int, properties: Callable[[Message], Any]) -> None:
        self._topic = topic
        self._per_batch = per_batch
        self._qos = qos
        self._properties = properties
        self._event_type = "text/plain" if text else "application/json"
        self._batch_type = "text/plain" if text else "application/x-ndjson"

    def packet_size(self, message: Message, payload_size: int | None = None) -> int:
        """The bytes of the PUBLISH packet that carries ``message`` (with a payload of
        ``payload_size`` bytes instead of its own, when given)."""
        props = self._properties(message)
        remaining = (2 + len(message.topic.encode("utf-8", "surrogatepass"))
                     + (2 if self._qos else 0)
                     + (len(props.pack()) if props is not None else 0)
                     + (len(message.payload) if payload_size is None else payload_size))
        return 1 + _varint_size(remaining) + remaining

    def build(self, batch: Batch, max_packet: int | None = None
              ) -> tuple[list[Message], tuple[int, str] | None]:
        """The messages for ``batch`` and, when it stopped early, (index, reason) of the
        event it stopped at. ``max_packet``: the broker's Maximum Packet Size, if any."""
        topics: list[str] = []
        bad: tuple[int, str] | None = None
        events, lines = batch.events, batch.lines
        for i, event in enumerate(events):
            topic = self._topic(event)
            if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
                bad = (i, "rendered topic is longer than 65535 bytes")
                break
            if max_packet is not None:
                size = self.packet_size(self._message(topic, events, lines, [i]))
                if size > max_packet:
                    bad = (i, f"its message of {size} bytes is above the broker's maximum"
                              f" packet size ({max_packet} bytes)")
                    break
            topics.append(topic)
        if not self._per_batch:
            return [self._message(t, events, lines, [i]) for i, t in enumerate(topics)], bad
        # One message per topic, never one per batch: a batch mixes organizations, and a
        # subscriber of one organization's topic must not receive another's events.
        groups: dict[str, list[int]] = {}
        for i, topic in enumerate(topics):
            groups.setdefault(topic, []).append(i)
        messages = []
        for topic, idx in groups.items():
            chunk: list[int] = []
            size = 0  # of the chunk's payload
            for i in idx:
                if chunk and max_packet is not None and self.packet_size(
                        self._message(topic, events, [], [chunk[0], i], count=len(chunk) + 1),
                        size + len(lines[i]) + 1) > max_packet:
                    messages.append(self._message(topic, events, lines, chunk))
                    chunk, size = [], 0
                chunk.append(i)
                size += len(lines[i]) + 1
            messages.append(self._message(topic, events, lines, chunk))
        return messages, bad

    def _message(self, topic: str, events: list[dict[str, Any]], lines: list[bytes],
                 idx: list[int], *, count: int | None = None) -> Message:
        """The message of the events ``idx`` (consecutive on their topic); with no
        ``lines``, its properties only (for a size: ``count`` events from idx[0] to idx[-1])."""
        if not self._per_batch:
            i = idx[0]
            return Message(topic, lines[i], (("event_id", str(events[i].get("id", ""))),),
                           self._event_type)
        props = (
            ("batch_first_id", str(events[idx[0]].get("id", ""))),
            ("batch_last_id", str(events[idx[-1]].get("id", ""))),
            ("event_count", str(len(idx) if count is None else count)),
        )
        payload = b"".join(lines[i] + b"\n" for i in idx) if lines else b""
        return Message(topic, payload, props, self._batch_type)
