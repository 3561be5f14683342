"""Covers that keep the playlist's look: image-to-image from a picture instead of from noise.

    look "current"     the playlist's cover on Spotify (bot/app/spotify_images.py fetches it)
    look "attachment"  a picture the person gives: a Discord attachment, the CLI's --from-image
        → start_image: a JPEG or PNG, at most MAX_START_BYTES, at most MAX_START_PIXELS
          (read from the header, before any pixel is decoded: models/safe_files.py),
          centre-cropped to a square, resized to the model's native size (start_png: as PNG)
        → saved under the output folder (a restart or a reroll reads it again) and handed to
          the queue as every spec's init_image, with ``strength``: the same image-to-image
          path as the variations under a cover post (models/img2img.py, models/runner.py)

Everything here comes from outside (Spotify's answer and its CDN, a Discord attachment, a
file): every refusal is one :class:`StartImageRefused` sentence, and nothing is queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bot.app.errors import StartImageRefused
from models.errors import FileRefused
from models.safe_files import open_image, read_bytes

LOOKS = ("current", "attachment")
# How far the covers may move from the picture (0: unchanged, 1: all new). Above the
# variations' 0.4 (bot/app/request.py): a new cover in the old one's palette and layout, not a
# copy of it.
LOOK_STRENGTH = 0.6
# Bytes of a start picture. Spotify's own covers are far smaller (an upload is at most 256 KB,
# its CDN serves 640 px JPEGs); an attachment may be a phone photo, typically 2–5 MB as JPEG.
# Everything is scaled down to at most 1024 px anyway, so more would only cost memory and time.
MAX_START_BYTES = 5 * 1024 * 1024
# 6000² pixels: beyond a phone camera's usual 12 M-pixel photo, and its decoded RGB copy
# (~108 MB) is still harmless; checked from the header before decoding (a decompression bomb
# declares far more).
MAX_START_PIXELS = 6000 * 6000
START_TYPES = ("image/jpeg", "image/png")
_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}


class _Asked(Protocol):
    """What :func:`start_picture` reads of a request (bot/app/request.py's CoverRequest)."""

    look: str | None
    image: bytes | None
    image_type: str | None
    start_image: str | None


async def start_picture(
    request: _Asked, playlist_id: str, size: int, spotify: Callable[[], Any], settings: Any
) -> tuple[bytes, str]:
    """The start image of a request with a ``look`` – checked, square, ``size`` px, as PNG –
    and the path it is saved at (under ``settings.output_dir``). ``spotify()`` gives the
    reader whose ``current_cover`` fetches the playlist's cover (bot/app/spotify.py); a saved
    ``start_image`` (a reroll, a restart) is read again instead. Every refusal is a
    :class:`StartImageRefused` (or a Spotify error), raised before anything is queued."""
    if request.start_image is not None:
        return await asyncio.to_thread(read_start, request.start_image), request.start_image
    if request.look == "current":
        data, kind = await asyncio.to_thread(spotify().current_cover, playlist_id)
        what = "The playlist's current cover"
    else:
        data, kind, what = request.image or b"", request.image_type, "The attached image"
        check_type(kind, what)
    png = await asyncio.to_thread(start_png, data, size, what)
    path = await asyncio.to_thread(save_start, png, Path(settings.output_dir) / "start-images")
    return png, str(path)


def check_type(content_type: str | None, what: str) -> None:
    """Refuse a declared content type other than JPEG or PNG (parameters such as ``charset``
    ignored). ``what`` names the picture in the sentence."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared not in START_TYPES:
        # The type came from outside: only its harmless characters are shown back.
        shown = re.sub(r"[^a-z0-9.+/-]", "", declared)[:40] or "no type at all"
        raise StartImageRefused(f"{what} is not a JPEG or PNG image (it came as {shown}).")


def sniff_type(data: bytes) -> str | None:
    """The content type a file's first bytes show (JPEG or PNG), for a picture that came
    without one (a file on disk); None for anything else, which :func:`check_type` refuses."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


def check_size(size: int, what: str) -> None:
    """Refuse ``size`` bytes above :data:`MAX_START_BYTES`."""
    if size > MAX_START_BYTES:
        raise StartImageRefused(
            f"{what} is too large ({size / 1024 / 1024:.1f} MB; at most "
            f"{MAX_START_BYTES // 1024 // 1024} MB)."
        )


def start_image(data: bytes, size: int, what: str):
    """The picture in ``data`` as the model's start image: decoded (JPEG or PNG only, within
    the byte and pixel limits), centre-cropped to a square and resized to ``size``² RGB.
    Raises :class:`StartImageRefused` naming ``what``; never anything else for any bytes."""
    from PIL import Image

    check_size(len(data), what)
    # 1. the header says JPEG or PNG (no other decoder of Pillow's ever sees the bytes)
    if not _is_jpeg_or_png(data):
        raise StartImageRefused(f"{what} is not a JPEG or PNG image.")
    # 2. decoded with the pixel count checked first, text chunks bounded
    try:
        image = open_image(data, name=what, max_bytes=MAX_START_BYTES, max_pixels=MAX_START_PIXELS)
    except FileRefused as refused:
        raise StartImageRefused(str(refused)) from None
    # 3. square, at the model's size
    side = min(image.size)
    if side < 1:
        raise StartImageRefused(f"{what} has no pixels.")
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.convert("RGB").crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def start_png(data: bytes, size: int, what: str) -> bytes:
    """:func:`start_image` encoded as PNG: what a job's ``init_image`` carries."""
    buffer = io.BytesIO()
    start_image(data, size, what).save(buffer, format="PNG")
    return buffer.getvalue()


def save_start(png: bytes, folder: Path) -> Path:
    """Keep a start image under ``folder`` by its hash, so that a restart (resume) or a reroll
    starts from the same picture even when the playlist's cover has changed since."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"start-{hashlib.sha256(png).hexdigest()[:16]}.png"
    if not path.exists():
        path.write_bytes(png)
    return path


def read_start(path: str) -> bytes:
    """A start image saved by :func:`save_start`, read as an untrusted file (the path comes
    from a database row)."""
    try:
        return read_bytes(path, limit=MAX_START_BYTES)
    except FileRefused as refused:
        raise StartImageRefused(
            f"The picture these covers started from is gone: {refused}"
        ) from None


def _is_jpeg_or_png(data: bytes) -> bool:
    """Whether the header is a JPEG's or a PNG's. Pillow reads only the header here, but it
    already raises for a huge declared size: such a file is a PNG or JPEG all the same, and
    :func:`open_image` refuses it by its size."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(_FORMATS)):
                return True
    except Image.DecompressionBombError:
        return True
    except (OSError, ValueError, SyntaxError, EOFError):  # UnidentifiedImageError is an OSError
        return False
