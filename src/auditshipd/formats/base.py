"""What every format encoder is: redacted event in, the bytes a sink ships out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["Encoder"]

_decode = msgspec.json.Decoder().decode


class Encoder:
    """Base of the format encoders. ``encode`` takes one redacted event (a dict decoded
    from the line that leaves the machine) and returns one line (no newline) in the
    format; ``encode_lines`` does it for the redacted JSON lines of a batch."""

    name = ""
    #: False for formats whose lines are not JSON (a sink cannot wrap them in an array).
    json = True

    def encode(self, event: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def encode_lines(self, lines: Sequence[bytes]) -> list[bytes]:
        encode = self.encode
        return [encode(_decode(line)) for line in lines]
