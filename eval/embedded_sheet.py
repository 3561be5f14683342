"""The embedded model's sample sheet: what the rules draw, the old model and the new one, for
the example playlists (issue 29; docs/embedded.md).

    python -m eval.embedded_sheet --old runs/old-model --new shipped --out docs/embedded/samples.png

Each row is one ``examples/playlists/*.json`` through the bot's own prompt (the ``seed`` style,
``"<title> playlist cover image"``, candidate seeds 0 and 1), every image taken to the tile size
by :func:`models.postprocess.upscale` as the bot delivers it. The first column is what the
synthetic rules draw for the title's words (:func:`spec_from_title`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bot.app.playlist import load_snapshot
from bot.app.prompts.writer import build_prompts
from eval.embedded_check import load_pipeline, render
from models.postprocess import upscale
from training.synthetic import (
    ACTIVITIES,
    CAPTION_SUFFIX,
    ERAS,
    GENRES,
    MOODS,
    CoverSpec,
    render_cover,
)

TILE = 192  # px per image on the sheet
PLACEHOLDER_GENRE = "pop"  # the rules need a genre; a title that names none is drawn in pop's


def spec_from_title(title: str) -> CoverSpec:
    """The rules' reading of a real title: the first genre, activity, mood and era whose words
    it contains (whole words, case-folded)."""
    words = f" {' '.join(''.join(c if c.isalnum() or c in '&-' else ' ' for c in title.lower()).split())} "

    def find(signatures: Any) -> str | None:
        for signature in signatures:
            if any(f" {word} " in words for word in signature.words):
                return signature.name
        return None

    return CoverSpec(
        title=title,
        genre=find(GENRES) or PLACEHOLDER_GENRE,
        activity=find(ACTIVITIES),
        mood=find(MOODS),
        era=find(ERAS),
    )


def _generate(pipe: Any, prompt: str, seeds: list[int]) -> list[Image.Image]:
    return render(pipe, [prompt] * len(seeds), seeds)


def sheet(playlists: list[Path], models: dict[str, Any], seeds: list[int]) -> Image.Image:
    font = ImageFont.load_default(size=14)
    header = 24
    columns = 1 + len(models) * len(seeds)
    label_width = 220
    canvas = Image.new(
        "RGB", (label_width + columns * TILE, header + len(playlists) * TILE), "white"
    )
    draw = ImageDraw.Draw(canvas)
    titles = ["rules' drawing"] + [f"{name}, seed {s}" for name in models for s in seeds]
    for c, text in enumerate(titles):
        draw.text((label_width + c * TILE + 4, 4), text, fill="black", font=font)
    for r, path in enumerate(playlists):
        prompt = build_prompts(load_snapshot(path), count=1, style="seed", seed=0)[0].text
        title = prompt.removesuffix(f" {CAPTION_SUFFIX}")
        spec = spec_from_title(title)
        rng = np.random.default_rng(r)
        tiles = [render_cover(spec, rng, TILE)]
        for pipe in models.values():
            tiles += [upscale(image, TILE) for image in _generate(pipe, prompt, seeds)]
        top = header + r * TILE
        for c, tile in enumerate(tiles):
            canvas.paste(tile, (label_width + c * TILE, top))
        words = ", ".join(
            f"{k}: {v}"
            for k, v in spec.metadata().items()
            if k in ("genre", "activity", "mood", "era") and v
        )
        draw.multiline_text(
            (6, top + 8),
            f"{path.stem}\n{title[:28]}\n{words}".replace(", ", "\n"),
            fill="black",
            font=font,
        )
    return canvas


def _version(model: str) -> str:
    """The release a package names in its info file, or the folder's name."""
    from models.embedded import PACKAGED, packaged_info

    info = packaged_info(PACKAGED if model == "shipped" else Path(model)) or {}
    return str(info.get("version") or Path(model).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.embedded_sheet", description=__doc__)
    parser.add_argument("--old", required=True, help="'shipped' or a diffusers folder")
    parser.add_argument("--new", required=True, help="'shipped' or a diffusers folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--examples", default="examples/playlists")
    args = parser.parse_args(argv)
    playlists = sorted(Path(args.examples).glob("*.json"))
    models = {}
    for role, model in (("old", args.old), ("new", args.new)):
        pipe = load_pipeline(model)
        models[f"{role} ({_version(model)})"] = pipe
    for pipe in models.values():
        pipe.set_progress_bar_config(disable=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet(playlists, models, [0, 1]).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
