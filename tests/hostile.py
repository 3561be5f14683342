"""Files made to hurt a reader (issue 31): built in memory, a few KB each."""

from __future__ import annotations

import io
import zlib

from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``x``height`` and which carries no pixels: Pillow
    sizes its buffers from the header (30000x30000 RGB would be 2.7 GB)."""
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


def ztxt_bomb(inflated: int = 64_000_000) -> bytes:
    """A 64x64 PNG with a zTXt ``parameters`` chunk that inflates to ``inflated`` bytes (about
    a thousandth of that on disk)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    data = buffer.getvalue()
    bomb = png_chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(b"a" * inflated, 9))
    return data[:33] + bomb + data[33:]  # right after IHDR (8-byte signature + 25)
