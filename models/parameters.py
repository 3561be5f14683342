"""Generation parameters inside the image files, in the ``parameters`` text other tools read.

A PNG gets a ``tEXt`` chunk named ``parameters``, written the way Stable Diffusion front-ends
write it, so their "PNG info" readers, image browsers and the like show it::

    neon highway at night, late night drive playlist cover image
    Negative prompt: blurry, low quality
    Steps: 20, Sampler: DPMSolverMultistepScheduler, CFG scale: 7.5, Seed: 1234, Size: 64x64, Model: embedded

Line one is the prompt, the ``Negative prompt:`` line is optional, and the last line holds
``key: value`` pairs separated by ``, `` (a value holding a comma, colon or quote is
JSON-quoted). An image-to-image result adds ``Denoising strength``. A JPEG carries a one-line
comment instead (JPEG readers show comments, not text chunks).

:func:`parse_parameters` reads the text back: it is how ``--variations-of`` learns the prompt,
seed and settings of a candidate the CLI or the bot wrote.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import CoverError

PNG_KEY = "parameters"
_NEGATIVE = "Negative prompt: "
# One "key: value" of the last line: a JSON-quoted value, or anything up to the next comma.
_PAIR = re.compile(r'\s*([A-Za-z][\w /-]*):\s*("(?:\\.|[^"\\])*"|[^,]*)\s*(?:,|$)')
_SIZE = re.compile(r"(\d+)x(\d+)")
_MAX_COMMENT = 65533  # a JPEG segment's length field counts itself (2 bytes) too


class ParametersUnreadable(CoverError):
    """An image without our generation parameters, or with ones we cannot read."""


@dataclass(frozen=True)
class ImageParameters:
    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str
    strength: float | None = None  # image-to-image's denoising strength; None: from noise
    extra: dict[str, str] = field(default_factory=dict)  # keys of other tools, kept as read

    def text(self) -> str:
        """The ``parameters`` text (see the module docstring)."""
        pairs = {
            "Steps": str(self.steps),
            "Sampler": self.sampler,
            "CFG scale": _number(self.cfg_scale),
            "Seed": str(self.seed),
            "Size": f"{self.width}x{self.height}",
            "Model": self.model,
        }
        if self.strength is not None:
            pairs["Denoising strength"] = _number(self.strength)
        pairs.update(self.extra)
        lines = [_one_line(self.prompt)]
        if self.negative_prompt:
            lines.append(_NEGATIVE + _one_line(self.negative_prompt))
        lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in pairs.items()))
        return "\n".join(lines)

    def comment(self) -> str:
        """The JPEG's short comment."""
        strength = f", strength {_number(self.strength)}" if self.strength is not None else ""
        return (
            f"playlist-cover: {self.model}, seed {self.seed}, {self.steps} steps, "
            f"CFG {_number(self.cfg_scale)}{strength}"
        )


def parse_parameters(text: str) -> ImageParameters:
    """The parameters in ``text``. Raises :class:`ParametersUnreadable` naming what is wrong."""
    lines = text.strip("\n").split("\n")
    if len(lines) < 2:
        raise ParametersUnreadable("The image's parameters have no settings line.")
    *head, settings = lines
    negative_at = next((i for i, line in enumerate(head) if line.startswith(_NEGATIVE)), None)
    prompt_lines = head if negative_at is None else head[:negative_at]
    negative_lines = [] if negative_at is None else head[negative_at:]
    if negative_lines:
        negative_lines[0] = negative_lines[0][len(_NEGATIVE) :]
    pairs = _pairs(settings)
    try:
        width, height = _size(pairs.pop("Size"))
        strength = pairs.pop("Denoising strength", None)
        return ImageParameters(
            prompt="\n".join(prompt_lines),
            negative_prompt="\n".join(negative_lines),
            steps=int(pairs.pop("Steps")),
            sampler=pairs.pop("Sampler", ""),
            cfg_scale=float(pairs.pop("CFG scale")),
            seed=int(pairs.pop("Seed")),
            width=width,
            height=height,
            model=pairs.pop("Model"),
            strength=None if strength is None else float(strength),
            extra=pairs,
        )
    except KeyError as missing:
        raise ParametersUnreadable(f"The image's parameters have no {missing.args[0]!r}.") from None
    except ValueError as error:
        raise ParametersUnreadable(f"The image's parameters are malformed: {error}.") from None


def read_png_parameters(path: str | Path) -> ImageParameters:
    """The parameters a PNG written by us (or another SD front-end) carries."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PNG_KEY)
    except FileNotFoundError:
        raise ParametersUnreadable(f"There is no image at {Path(path).name}.") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ParametersUnreadable(
            f"{Path(path).name} is not a readable image ({error})."
        ) from None
    if not text:
        raise ParametersUnreadable(
            f"{Path(path).name} carries no generation parameters: give a candidate PNG that "
            "`python -m bot cover` or the bot wrote."
        )
    return parse_parameters(text)


def _pairs(line: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    at = 0
    while at < len(line):
        match = _PAIR.match(line, at)
        if match is None or match.end() == at:
            raise ParametersUnreadable(f"The image's settings line is malformed at {line[at:]!r}.")
        key, value = match[1].strip(), match[2].strip()
        if value.startswith('"'):
            try:
                value = str(json.loads(value))
            except ValueError:
                raise ParametersUnreadable(
                    f"The image's settings line has a broken quoted value for {key!r}."
                ) from None
        pairs[key] = value
        at = match.end()
    return pairs


def _size(text: str) -> tuple[int, int]:
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"Size {text!r} is not WIDTHxHEIGHT")
    return int(match[1]), int(match[2])


def _quoted(value: str) -> str:
    if any(c in value for c in ',:"\n') or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _number(value: float) -> str:
    return f"{value:g}"


def png_info(parameters: ImageParameters) -> Any:
    """A ``PngInfo`` holding the ``parameters`` chunk, for ``Image.save(pnginfo=...)``."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(PNG_KEY, parameters.text())  # iTXt: UTF-8, so any prompt survives
    return info


def with_jpeg_comment(jpeg: bytes, comment: str) -> bytes:
    """``jpeg`` with a COM segment right after its start-of-image marker (the comment is cut to
    what one segment holds). The result is ``len(comment) + 4`` bytes longer at most."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG: it does not start with the SOI marker")
    data = comment.encode("utf-8")[:_MAX_COMMENT]
    return jpeg[:2] + b"\xff\xfe" + (len(data) + 2).to_bytes(2, "big") + data + jpeg[2:]


def comment_overhead(comment: str) -> int:
    """The bytes :func:`with_jpeg_comment` adds for ``comment``."""
    return len(comment.encode("utf-8")[:_MAX_COMMENT]) + 4
