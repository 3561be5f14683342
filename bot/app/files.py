"""A cover's files: each candidate as a 512 px PNG carrying its generation parameters and a
Spotify-ready JPEG with a comment, the contact sheet, and ``cover.json``."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bot.app.errors import OutputFailed
from bot.app.playlist import PlaylistFacts
from bot.app.prompts import Prompt, clean_title
from models.jobs import GeneratedImage, GenerationParams
from models.parameters import ImageParameters
from models.registry import ModelSpec

OUTPUT_SIZE = 512  # every candidate is delivered at 512x512, whatever the model's native size


@dataclass(frozen=True)
class CoverCandidate:
    index: int  # 1-based, matches the vote reaction
    prompt: Prompt
    seed: int  # the seed that made the image (differs from prompt.seed after a black retry)
    black_retries: int
    png_path: Path
    jpeg_path: Path
    jpeg_bytes: int
    jpeg_quality: int


@dataclass(frozen=True)
class CoverResult:
    """The kept covers of one request: its candidates' files, the sheet, and what made them."""

    request_id: str
    facts: PlaylistFacts
    model: ModelSpec
    candidates: tuple[CoverCandidate, ...]
    sheet_path: Path
    out_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    blocked: int = 0  # images the safety checker blacked out even after retries; dropped
    # Candidates (their indices) the safety checker flagged, kept by the server's NSFW policy
    # in an NSFW channel (bot/app/server_rules.py): posted behind a spoiler.
    flagged: tuple[int, ...] = ()

    @property
    def notice(self) -> str | None:
        """A sentence for the requester when fewer candidates came than were asked for, or
        some are behind a spoiler."""
        notes = []
        if self.blocked:
            asked = self.blocked + len(self.candidates)
            notes.append(
                f"{self.blocked} of {asked} candidates came out black (the model's safety "
                f"checker flagged {'it' if self.blocked == 1 else 'them'}, also after retries "
                f"with new seeds) and {'was' if self.blocked == 1 else 'were'} left out."
            )
        if self.flagged:
            numbers = ", ".join(map(str, self.flagged))
            notes.append(
                f"The safety checker flagged candidate(s) {numbers}: shown behind a spoiler, "
                "as this server allows in NSFW channels."
            )
        return " ".join(notes) or None


def check_output_folder(folder: Path) -> None:
    """Make ``folder`` and write a scratch file in it, so that a folder that can't be written
    (below a regular file, on a read-only or pseudo file system like /proc) is found before
    minutes of generation, not after. Raises :class:`OutputFailed` naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputFailed(
            f"The output folder {folder} can't be written ({error.strerror or type(error).__name__})."
        ) from None


def write_candidates(
    title: str,
    images: list[tuple[Prompt, GeneratedImage]],
    out_dir: Path,
    title_overlay: bool,
    params: GenerationParams,
    model: str,
) -> tuple[list[CoverCandidate], Path]:
    """Upscale, optionally set ``title`` on, and save each image as PNG and as a Spotify-ready
    JPEG, numbered from 1 in the order given. Each file carries its generation parameters: the
    PNG a ``parameters`` chunk, the JPEG a comment (models/parameters.py)."""
    from models.parameters import comment_overhead, png_info, with_jpeg_comment
    from models.postprocess import SPOTIFY_JPEG_MAX_BYTES, contact_sheet, encode_jpeg_under, upscale
    from models.title import overlay_title

    out_dir.mkdir(parents=True, exist_ok=True)
    candidates: list[CoverCandidate] = []
    finals = []
    for index, (prompt, generated) in enumerate(images, 1):
        image = upscale(generated.image, OUTPUT_SIZE)
        if title_overlay:
            image = overlay_title(image, clean_title(title))  # emoji have no glyphs
        png_path = out_dir / f"candidate-{index}.png"
        jpeg_path = out_dir / f"candidate-{index}.jpg"
        parameters = ImageParameters(
            prompt=generated.spec.prompt,
            negative_prompt=generated.spec.negative_prompt,
            steps=params.steps,
            sampler=generated.sampler,
            cfg_scale=params.guidance,
            seed=generated.seed,
            width=generated.image.width,
            height=generated.image.height,
            model=model,
            strength=params.strength,
        )
        image.save(png_path, format="PNG", optimize=True, pnginfo=png_info(parameters))
        comment = parameters.comment()
        data, quality = encode_jpeg_under(image, SPOTIFY_JPEG_MAX_BYTES - comment_overhead(comment))
        data = with_jpeg_comment(data, comment)
        jpeg_path.write_bytes(data)
        finals.append(image)
        candidates.append(
            CoverCandidate(
                index,
                prompt,
                generated.seed,
                generated.black_retries,
                png_path,
                jpeg_path,
                len(data),
                quality,
            )
        )
    sheet_path = out_dir / "sheet.png"
    contact_sheet(finals).save(sheet_path, format="PNG", optimize=True)
    return candidates, sheet_path


def write_manifest(cover: CoverResult) -> Path:
    """``cover.json`` beside the images: enough to reproduce the run with the same seeds."""
    path = cover.out_dir / "cover.json"
    manifest = {
        "request_id": cover.request_id,
        "playlist": {"id": cover.facts.id, "name": cover.facts.name, "source": cover.facts.source},
        "model": cover.model.name,
        "lora": str(cover.model.lora) if cover.model.lora else None,
        "timings": cover.timings,
        "blocked": cover.blocked,
        "sheet": cover.sheet_path.name,
        "candidates": [
            {
                "index": c.index,
                "style": c.prompt.style,
                "prompt": c.prompt.text,
                "negative_prompt": c.prompt.negative,
                "seed": c.seed,
                "black_retries": c.black_retries,
                "png": c.png_path.name,
                "jpeg": c.jpeg_path.name,
                "jpeg_bytes": c.jpeg_bytes,
                "jpeg_quality": c.jpeg_quality,
            }
            for c in cover.candidates
        ],
    }
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def slugify(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "playlist"


def manifest_label(candidate: Path) -> PlaylistFacts | None:
    """The playlist of a candidate, from the ``cover.json`` beside it (None without one)."""
    try:
        manifest = json.loads((candidate.parent / "cover.json").read_text(encoding="utf-8"))
        playlist = manifest["playlist"]
        return PlaylistFacts(id=str(playlist["id"]), name=str(playlist["name"]), description="")
    except (OSError, ValueError, KeyError, TypeError):
        return None
