"""``python -m training caption``: caption an image folder with a transformers captioning model.

    DIR/*.png … (+ an optional metadata.jsonl with titles)
      ─► images without a caption yet, in batches ─► the captioner (BLIP by default)
      ─► DIR/captions.jsonl (the raw captions, appended per batch: a stopped run resumes there)
      ─► DIR/metadata.jsonl (file_name, text, title, caption), written at the end in one go

Seed 003 captioned WikiArt with RAM/Tag2Text (a tagger plus a captioner); neither is a
transformers class. BLIP base (``Salesforce/blip-image-captioning-base``, models/support.py) is
the closest well-kept equivalent: one model, COCO-style literal captions, 224M parameters
(counted in docs/training.md) that a CPU runs. Any image-to-text model that ``AutoModelForImageTextToText`` loads and that generates
from an image alone works the same way (``--model``).

Titles (``--titles``): a folder's existing ``text`` is its title (a playlist name, say).
``merge`` writes ``"<title>, <caption>"`` (the caption adds what the title does not say),
``keep`` keeps the title and captions only untitled images, ``replace`` writes the caption and
keeps the title in the ``title`` field. The first run saves the folder's own metadata.jsonl as
``metadata.before-caption.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from training.data import IMAGE_EXTENSIONS, METADATA, DatasetError, is_relative_inside, read_rgb

log = logging.getLogger(__name__)

DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
CAPTIONS = "captions.jsonl"  # the raw captions, one line per image, appended as they come
BACKUP = "metadata.before-caption.jsonl"
TitleMode = Literal["merge", "keep", "replace"]
TITLE_MODES: tuple[str, ...] = ("merge", "keep", "replace")


@dataclass(frozen=True)
class CaptionConfig:
    folder: Path
    model: str = DEFAULT_CAPTION_MODEL  # hub id in the local cache, or a folder
    titles: TitleMode = "merge"
    batch_size: int = 8
    max_new_tokens: int = 30  # BLIP's COCO captions are ~10 words; 30 tokens leaves room
    device: str = "auto"

    def check(self) -> None:
        if not Path(self.folder).is_dir():
            raise DatasetError(f"The image folder {str(self.folder)!r} does not exist.")
        if self.titles not in TITLE_MODES:
            raise ValueError(
                f"--titles must be one of {', '.join(TITLE_MODES)}, got {self.titles!r}."
            )
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if not 1 <= self.max_new_tokens <= 75:  # a caption longer than CLIP's window is wasted
            raise ValueError(
                f"--max-new-tokens must be between 1 and 75, got {self.max_new_tokens}."
            )


@dataclass(frozen=True)
class CaptionResult:
    images: int  # rows in the written metadata.jsonl
    captioned: int  # images the model captioned in this run
    reused: int  # captions found in captions.jsonl from an earlier run
    seconds: float  # model time of this run (loading excluded)
    metadata: Path

    @property
    def images_per_second(self) -> float | None:
        return self.captioned / self.seconds if self.captioned and self.seconds > 0 else None


# -- the pure part: rows in, rows out -----------------------------------------------------------


def merge_text(title: str | None, caption: str | None, mode: str) -> str:
    """The training caption of one image from its title and the model's caption."""
    title = (title or "").strip()
    caption = (caption or "").strip()
    if mode == "keep" and title:
        return title
    if mode == "replace" or not title:
        return caption
    if not caption or caption.lower() in title.lower():
        return title
    return f"{title}, {caption}"


def read_rows(folder: Path) -> list[dict[str, Any]]:
    """The folder's metadata rows (if any) followed by rows for the images they do not list,
    in name order; each row has ``file_name`` and ``title`` (None for an untitled image)."""
    rows: list[dict[str, Any]] = []
    listed: set[str] = set()
    metadata = folder / METADATA
    if metadata.is_file():
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                name = str(row["file_name"])
            except (ValueError, KeyError, TypeError):
                raise DatasetError(
                    f"{metadata}, line {number}: not a JSON object with a file_name."
                ) from None
            if not is_relative_inside(name):
                raise DatasetError(
                    f"{metadata}, line {number}: the file name {name!r} leads outside the folder."
                )
            if not (folder / name).is_file():
                raise DatasetError(
                    f"{metadata}, line {number}: the image {folder / name} is missing."
                )
            # A row this command wrote keeps its title apart; otherwise `text` is the title.
            title = row["title"] if "title" in row else row.get("text")
            rows.append({**row, "file_name": name, "title": title or None})
            listed.add(name)
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        hidden = any(part.startswith(".") for part in Path(name).parts)
        if path.suffix.lower() in IMAGE_EXTENSIONS and name not in listed and not hidden:
            rows.append({"file_name": name, "title": None})
    if not rows:
        raise DatasetError(
            f"The folder {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    return rows


def _read_captions(path: Path, model: str) -> dict[str, str]:
    """Captions an earlier run of the same model left; a torn last line (a killed run) is
    skipped."""
    done: dict[str, str] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("model") == model and "file_name" in row:
            done[str(row["file_name"])] = str(row.get("caption", ""))
    return done


# -- the model -------------------------------------------------------------------------------


class Captioner:
    """A loaded image-to-text model and its processor: images in, one caption each."""

    def __init__(
        self, model: Any, processor: Any, *, name: str, device: str, max_new_tokens: int = 30
    ) -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.name = name
        self.device = device
        self.max_new_tokens = max_new_tokens

    def __call__(self, images: Sequence[Any]) -> list[str]:
        import torch

        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)  # (B, 3, S, S)
        with torch.inference_mode():
            # Greedy decoding: deterministic, and what BLIP's model card shows.
            ids = self.model.generate(
                pixel_values=pixels, max_new_tokens=self.max_new_tokens, do_sample=False
            )
        return [
            " ".join(t.split()) for t in self.processor.batch_decode(ids, skip_special_tokens=True)
        ]


def load_captioner(
    name: str = DEFAULT_CAPTION_MODEL, *, device: str = "cpu", max_new_tokens: int = 30
) -> Captioner:
    """The captioner ``name`` from the local Hugging Face cache (or a folder); raises
    :class:`~models.errors.ModelUnavailable` saying how to fetch it when it is not there."""
    from models.errors import ModelUnavailable
    from models.registry import quiet_libraries
    from models.support import model_folder

    folder = model_folder(name, role="captioning")
    try:
        from transformers import AutoModelForImageTextToText, AutoProcessor
    except ImportError:
        raise ModelUnavailable(
            "Captioning needs transformers: pip install -e '.[training]' in the project's checkout"
        ) from None
    quiet_libraries()
    try:
        model = AutoModelForImageTextToText.from_pretrained(folder)
        processor = AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as error:
        raise ModelUnavailable(
            f"The captioning model {name} could not be loaded from {folder} ({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from error
    return Captioner(model, processor, name=name, device=device, max_new_tokens=max_new_tokens)


# -- the run ---------------------------------------------------------------------------------


def caption_folder(
    config: CaptionConfig,
    *,
    captioner: Callable[[], Any] | None = None,
    log_line: Callable[[str], None] = log.info,
) -> CaptionResult:
    """Caption what ``config.folder`` lacks and write its metadata.jsonl (module docstring).
    ``captioner`` builds the model only if some image needs a caption (tests inject one)."""
    from tqdm.auto import tqdm

    config.check()
    folder = Path(config.folder)
    # 1. What is there: rows with titles, and captions an earlier run already made.
    rows = read_rows(folder)
    done = _read_captions(folder / CAPTIONS, config.model)
    reused = sum(1 for r in rows if r["file_name"] in done)
    todo = [r["file_name"] for r in rows if r["file_name"] not in done]
    if config.titles == "keep":  # titled images keep their title: no caption needed
        titled = {r["file_name"] for r in rows if r["title"]}
        todo = [name for name in todo if name not in titled]

    # 2. Caption the rest in batches, appending each batch to captions.jsonl as it is done.
    seconds = 0.0
    if todo:
        model = (
            captioner()
            if captioner is not None
            else load_captioner(
                config.model, device=_device(config.device), max_new_tokens=config.max_new_tokens
            )
        )
        log_line(f"Captioning {len(todo)} image(s) with {config.model} ({reused} done before).")
        _end_torn_line(folder / CAPTIONS)
        with (
            (folder / CAPTIONS).open("a", encoding="utf-8") as out,
            tqdm(total=len(todo), desc="captions", unit="img") as bar,
        ):
            for start in range(0, len(todo), config.batch_size):
                names = todo[start : start + config.batch_size]
                images = [read_rgb(folder / name) for name in names]
                began = time.perf_counter()
                captions = model(images)
                seconds += time.perf_counter() - began
                for name, caption in zip(names, captions, strict=True):
                    done[name] = caption
                    out.write(
                        json.dumps({"file_name": name, "caption": caption, "model": config.model})
                        + "\n"
                    )
                out.flush()
                os.fsync(out.fileno())
                bar.update(len(names))

    # 3. metadata.jsonl in one go (a crash here leaves the old one and captions.jsonl).
    metadata = folder / METADATA
    if metadata.is_file() and not (folder / BACKUP).exists():
        shutil.copyfile(metadata, folder / BACKUP)
    lines = []
    for row in rows:
        caption = done.get(row["file_name"])
        text = merge_text(row["title"], caption, config.titles)
        if not text:
            raise DatasetError(
                f"The captioner wrote nothing for {folder / row['file_name']} and it has no title."
            )
        extra = {
            k: v
            for k, v in row.items()
            if k not in ("file_name", "text", "title", "caption", "caption_model")
        }
        line = {
            "file_name": row["file_name"],
            "text": text,
            "title": row["title"],
            "caption": caption,
        }
        line["caption_model"] = config.model if caption is not None else None
        lines.append(json.dumps({**line, **extra}, ensure_ascii=False))
    partial = folder / (METADATA + ".partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, metadata)
    return CaptionResult(len(rows), len(todo), reused, seconds, metadata)


def _end_torn_line(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline; appending to it would glue
    the next caption onto the torn one and lose both."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as existing:
            existing.seek(-1, os.SEEK_END)
            torn = existing.read(1) != b"\n"
        if torn:
            with path.open("a", encoding="utf-8") as out:
                out.write("\n")


def _device(requested: str) -> str:
    from models.registry import pick_device

    return pick_device(requested)
