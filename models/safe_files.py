"""Reading a file that a person or a stored row names, without trusting it.

Whatever path arrives – ``--variations-of``, a candidate path from the database, an image in
a training folder or a preference-pair export – may be ``/dev/zero`` (reads until memory runs
out), a FIFO (blocks for ever), a huge file, or a small PNG that declares 30000x30000 pixels or
carries a compressed text chunk that inflates to gigabytes. Everything here checks first and
reads second, and every refusal is one :class:`~models.errors.FileRefused` sentence naming the
file by its base name only (people on Discord may read it; the bot's paths are its own).

Callers decide what a refusal means: the CLI and the bot show the sentence, training skips the
example and counts it.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

from models.errors import FileRefused

# A 512 px candidate PNG is well under 1 MB; training images and exports may be photos.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# 8192² is far beyond any model here (the largest makes 1024 px); Pillow's own default warns at
# ~89 M pixels and refuses only at twice that, after it has begun to allocate.
MAX_IMAGE_PIXELS = 8192 * 8192


def read_bytes(path: str | Path, *, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Opened without blocking (a FIFO would otherwise wait for a writer for ever), checked to be
    a regular file and no larger than ``limit`` before anything is read, and read with a cap
    (a file that grows while being read is refused, not followed).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileRefused(f"There is no file {path.name}.") from None
    except OSError as error:
        raise FileRefused(f"{path.name} can't be opened ({_reason(error)}).") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileRefused(f"{path.name} is not a regular file.")
    with os.fdopen(fd, "rb") as file:
        if info.st_size > limit:
            raise FileRefused(
                f"{path.name} is too large ({_mb(info.st_size)}; at most {_mb(limit)})."
            )
        try:
            data = file.read(limit + 1)
        except OSError as error:
            raise FileRefused(f"{path.name} can't be read ({_reason(error)}).") from None
    if len(data) > limit:
        raise FileRefused(f"{path.name} grew past {_mb(limit)} while it was read.")
    return data


def open_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
):
    """A fully decoded copy of the image in ``source`` (a path, read with :func:`read_bytes`,
    or bytes already read), with its ``text`` chunks; :class:`FileRefused` for anything that is
    not a reasonably sized image: a non-image, a truncated file, a declared size beyond
    ``max_pixels`` (checked from the header, before any pixel is decoded) or a text chunk that
    inflates past Pillow's limit.
    """
    import io

    from PIL import Image

    if isinstance(source, bytes | bytearray):
        data, label = bytes(source), name or "the image"
    else:
        data, label = read_bytes(source, limit=max_bytes), name or Path(source).name
    try:
        with warnings.catch_warnings():
            # Pillow warns (and later raises) about large images itself; our limit is lower
            # and checked below, so its warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise FileRefused(
                        f"{label} declares {width}x{height} pixels, more than this reads "
                        f"({max_pixels // 1_000_000} M pixels at most)."
                    )
                opened.load()
                return opened.copy() if opened.mode != "P" else opened.convert("RGBA")
    except FileRefused:
        raise
    except Image.DecompressionBombError:
        raise FileRefused(f"{label} declares more pixels than this reads.") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError, EOFError) as error:
        # A zTXt/iTXt chunk that inflates past Pillow's MAX_TEXT_CHUNK is a ValueError;
        # a truncated or foreign file an OSError; some broken headers a SyntaxError.
        raise FileRefused(f"{label} is not a readable image ({_short(error)}).") from None


def check_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse ``path`` the way :func:`open_image` would, reading only its header: for checking
    a whole training folder up front without decoding every image."""
    from PIL import Image

    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as error:
        raise FileRefused(f"{path.name} can't be opened ({_reason(error)}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{path.name} is not a regular file.")
    if info.st_size > MAX_IMAGE_BYTES:
        raise FileRefused(f"{path.name} is too large ({_mb(info.st_size)}).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
    except Image.DecompressionBombError:
        raise FileRefused(f"{path.name} declares more pixels than this reads.") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError, EOFError) as error:
        raise FileRefused(f"{path.name} is not a readable image ({_short(error)}).") from None
    if width * height > max_pixels:
        raise FileRefused(f"{path.name} declares {width}x{height} pixels, more than this reads.")


def _reason(error: OSError) -> str:
    return error.strerror or errno.errorcode.get(error.errno or 0, type(error).__name__)


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    # Pillow quotes the file name it was given; ours is a BytesIO, so nothing leaks, but a
    # message can still be long.
    return text if len(text) <= 120 else text[:117] + "..."


def _mb(count: int) -> str:
    return f"{count / 1024 / 1024:.1f} MB"
