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

A prompt line that itself starts with ``Negative prompt:`` (a playlist may be called that) or
with a backslash is written with one backslash in front, and the reader drops it: without the
escape such a prompt reads back as an empty prompt and a negative one.

:func:`parse_parameters` reads the text back: it is how ``--variations-of`` learns the prompt,
seed and settings of a candidate the CLI or the bot wrote. Any file can carry any text, so what
it reads is untrusted: :meth:`ImageParameters.check` holds it to :data:`LIMITS`, the same table
the command-line flags and Discord options are held to (``CoverRequest.check``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import FileRefused, ParametersUnreadable
from models.safe_files import open_image

PNG_KEY = "parameters"
_NEGATIVE = "Negative prompt: "
# One "key: value" of the last line: a JSON-quoted value, or anything up to the next comma.
_PAIR = re.compile(r'\s*([A-Za-z][\w /-]*):\s*("(?:\\.|[^"\\])*"|[^,]*)\s*(?:,|$)')
_SIZE = re.compile(r"(\d+)x(\d+)")
_MAX_COMMENT = 65533  # a JPEG segment's length field counts itself (2 bytes) too
_ESCAPE = "\\"
# Ours are a few hundred characters; anything far longer is not a candidate's parameters, and
# parsing or quoting megabytes of it would only make megabytes of error message.
MAX_TEXT_CHARS = 16_384
MAX_PROMPT_CHARS = 2_000  # CLIP reads 77 tokens; expanded prompts stay far below this

# The limits of every generation setting, wherever it comes from: a flag, a Discord option or
# an image's parameters. (low, high), inclusive.
LIMITS: dict[str, tuple[float, float]] = {
    "steps": (1, 200),
    "guidance": (0, 30),
    "strength": (0.05, 1),
    "size": (64, 1024),  # px per side; IF's first stage makes 64, nothing here makes more than 1024
}


def out_of_range(setting: str, value: float) -> str | None:
    """Why ``value`` is not allowed for ``setting`` (a key of :data:`LIMITS`), or None.
    NaN and infinities are never allowed; sizes must also be multiples of 8 (the VAE's)."""
    low, high = LIMITS[setting]
    if not math.isfinite(value) or not low <= value <= high:
        return f"must be between {low:g} and {high:g}, got {value:g}"
    if setting == "size" and value % 8:
        return f"must be a multiple of 8, got {value:g}"
    return None


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
        lines = [_escaped(_one_line(self.prompt))]
        if self.negative_prompt:
            lines.append(_NEGATIVE + _one_line(self.negative_prompt))
        lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in pairs.items()))
        return "\n".join(lines)

    def check(self) -> None:
        """Hold what a file said to :data:`LIMITS` before any of it is used: a file can say
        ``Steps: 1000000`` or ``Size: 100000x100000``. Raises :class:`ParametersUnreadable`
        naming the setting as the file spells it."""
        settings = [("Steps", "steps", self.steps), ("CFG scale", "guidance", self.cfg_scale)]
        settings += [("Size", "size", self.width), ("Size", "size", self.height)]
        if self.strength is not None:
            settings.append(("Denoising strength", "strength", self.strength))
        for label, setting, value in settings:
            problem = out_of_range(setting, value)
            if problem:
                raise ParametersUnreadable(f"The image's {label} {problem}.")
        for label, text in (("prompt", self.prompt), ("negative prompt", self.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise ParametersUnreadable(
                    f"The image's {label} is {len(text)} characters long; at most "
                    f"{MAX_PROMPT_CHARS} are used."
                )
        if not self.prompt.strip():
            raise ParametersUnreadable("The image's parameters have an empty prompt.")

    def comment(self) -> str:
        """The JPEG's short comment."""
        strength = f", strength {_number(self.strength)}" if self.strength is not None else ""
        return (
            f"playlist-cover: {self.model}, seed {self.seed}, {self.steps} steps, "
            f"CFG {_number(self.cfg_scale)}{strength}"
        )


def parse_parameters(text: str) -> ImageParameters:
    """The parameters in ``text``. Raises :class:`ParametersUnreadable` naming what is wrong.
    Only the layout is checked here; :meth:`ImageParameters.check` checks the values."""
    if len(text) > MAX_TEXT_CHARS:
        raise ParametersUnreadable(
            f"The image's parameters are {len(text)} characters long; ours are under "
            f"{MAX_TEXT_CHARS}."
        )
    lines = text.strip("\n").split("\n")
    if len(lines) < 2:
        raise ParametersUnreadable("The image's parameters have no settings line.")
    *head, settings = lines
    negative_at = next((i for i, line in enumerate(head) if line.startswith(_NEGATIVE)), None)
    prompt_lines = head if negative_at is None else head[:negative_at]
    negative_lines = [] if negative_at is None else head[negative_at:]
    if negative_lines:
        negative_lines[0] = negative_lines[0][len(_NEGATIVE) :]
    prompt_lines = [_unescaped(line) for line in prompt_lines]
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
        detail = str(error) if len(str(error)) <= 100 else str(error)[:100] + "…"
        raise ParametersUnreadable(f"The image's parameters are malformed: {detail}.") from None


def read_png_parameters(source: str | Path | bytes, *, name: str | None = None) -> ImageParameters:
    """The parameters a PNG written by us (or another SD front-end) carries: ``source`` is its
    path or its bytes (then ``name`` names it). The file goes through
    :func:`models.safe_files.open_image` first (a FIFO, ``/dev/zero`` or a decompression bomb
    is refused, not read); the values are not checked here (:meth:`ImageParameters.check`)."""
    label = name or (Path(source).name if not isinstance(source, bytes | bytearray) else "image")
    try:
        image = open_image(source, name=label)
    except FileRefused as refused:
        raise ParametersUnreadable(str(refused)) from None
    text = image.info.get(PNG_KEY)
    if not text or not isinstance(text, str):
        raise ParametersUnreadable(
            f"{label} carries no generation parameters: give a candidate PNG that "
            "`python -m bot cover` or the bot wrote."
        )
    return parse_parameters(str(text))


def _pairs(line: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    at = 0
    while at < len(line):
        match = _PAIR.match(line, at)
        if match is None or match.end() == at:
            rest = line[at:]
            shown = rest if len(rest) <= 40 else rest[:40] + "…"
            raise ParametersUnreadable(f"The image's settings line is malformed at {shown!r}.")
        key, value = match[1].strip(), match[2].strip()
        if value.startswith('"'):
            try:
                value = str(json.loads(value))
            except ValueError:
                raise ParametersUnreadable(
                    f"The image's settings line has a broken quoted value for {key[:40]!r}."
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


def _escaped(line: str) -> str:
    return _ESCAPE + line if line.startswith((_NEGATIVE.rstrip(), _ESCAPE)) else line


def _unescaped(line: str) -> str:
    return line[1:] if line.startswith(_ESCAPE) else line


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
