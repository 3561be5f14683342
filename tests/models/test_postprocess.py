"""Post-processing: black-image detection, resizing, the contact sheet, JPEG for Spotify, titles.

Everything runs on small synthetic images with Pillow and NumPy; contrast is measured from the
output pixels with an independent implementation of the WCAG formula."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, JpegImagePlugin

import models.title
from models.postprocess import (
    BLACK_LEVEL,
    SPOTIFY_JPEG_LIMIT,
    SPOTIFY_JPEG_MAX_BYTES,
    cell_origin,
    contact_sheet,
    encode_jpeg_under,
    is_black,
    upscale,
)
from models.title import (
    TitlePlacement,
    contrast_ratio,
    overlay_title,
    plan_title,
    relative_luminance,
    render_title,
    title_mask,
)
from tests.properties import examples

SIDE = 512


def noise(size: tuple[int, int] = (SIDE, SIDE), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (SIDE, SIDE)) -> Image.Image:
    return Image.new("RGB", size, colour)


def wcag_luminance(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 → relative luminance, written out from the WCAG 2.x definition."""
    c = pixels.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear[..., 0] * 0.2126 + linear[..., 1] * 0.7152 + linear[..., 2] * 0.0722


def min_contrast_under_text(out: Image.Image, plan: TitlePlacement) -> float:
    """The lowest contrast between the text colour and any background pixel inside the plan's
    box of the rendered image (pixels the glyphs touch are the text itself, so they are left out)."""
    left, top, right, bottom = plan.box
    pixels = np.asarray(out)[top:bottom, left:right]  # (h, w, 3)
    glyphs = np.asarray(title_mask(plan, out.size))[top:bottom, left:right]  # (h, w)
    background = pixels[glyphs == 0]  # (N, 3)
    assert background.size > 0
    text = wcag_luminance(np.array(plan.text_color, dtype=np.uint8))
    lum = wcag_luminance(background)
    ratio = (np.maximum(lum, text) + 0.05) / (np.minimum(lum, text) + 0.05)
    return float(ratio.min())


# -- is_black -------------------------------------------------------------------------------------


def test_is_black_on_the_safety_checker_output() -> None:
    assert is_black(solid((0, 0, 0)))


def test_is_black_forgives_near_black_noise() -> None:
    rng = np.random.default_rng(3)
    faint = Image.fromarray(rng.integers(0, 7, (256, 256, 3), dtype=np.uint8), "RGB")
    assert is_black(faint)


def test_is_black_forgives_a_few_stray_pixels_but_not_a_patch() -> None:
    pixels = np.zeros((256, 256, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # 1 pixel of 65536: within the 0.1% slack
    assert is_black(Image.fromarray(pixels))
    pixels[100:120, 100:120] = 255  # 400 pixels: 0.6%
    assert not is_black(Image.fromarray(pixels))


def test_is_black_catches_near_black_up_to_lightness_10_and_no_further() -> None:
    """Issue 31, point 7: the ``-random`` presets' tiny decoder made murk of mean 3.5/255 that
    passed for a picture. Near-black is black up to CIE L* 10 (sRGB 27) in every channel."""
    assert is_black(solid((BLACK_LEVEL,) * 3))
    assert not is_black(solid((BLACK_LEVEL + 1,) * 3))
    assert not is_black(solid((0, 0, BLACK_LEVEL + 1)))  # one visible channel is enough
    rng = np.random.default_rng(0)
    murk = rng.integers(0, 15, (256, 256, 3), dtype=np.uint8)  # mean 7/255
    assert is_black(Image.fromarray(murk))
    # the 0.1% slack still holds: 400 pixels of 65,536 (0.6%) above the level are a picture
    murk[100:120, 100:120] = BLACK_LEVEL + 1
    assert not is_black(Image.fromarray(murk))


def test_dark_covers_are_not_black() -> None:
    """The darkest synthetic covers (training/synthetic.py) pass: a moon on a near-black metal
    background (94% of the pixels at or under L* 10 – the darkest of 3,000 drawn covers), a
    dark-blue night with stars and scanlines; and a black sky whose stars cover 0.3%."""
    from training.synthetic import CoverSpec, render_cover

    def dark_share(image: Image.Image) -> float:
        return float((np.asarray(image).max(axis=2) <= BLACK_LEVEL).mean())

    moon = CoverSpec("metal lullaby", "metal", "sleep", None, None)
    night = CoverSpec("80s midnight punk", "punk", None, "night", "80s")
    for seed in range(5):
        for spec in (moon, night):
            image = render_cover(spec, np.random.default_rng(seed), 256)
            assert not is_black(image), (spec.title, seed, dark_share(image))
    darkest = render_cover(moon, np.random.default_rng(0), 256)
    assert dark_share(darkest) > 0.9  # really dark: the test is near the line

    sky = np.zeros((256, 256, 3), dtype=np.uint8)
    stars = np.random.default_rng(1).integers(0, 256, (200, 2))  # 200 of 65,536 pixels
    sky[stars[:, 0], stars[:, 1]] = 255
    assert not is_black(Image.fromarray(sky))


def test_is_black_false_for_a_real_picture() -> None:
    assert not is_black(noise((64, 64)))
    assert not is_black(solid((30, 10, 10), (64, 64)))


def test_is_black_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="fraction"):
        is_black(solid((0, 0, 0), (8, 8)), fraction=0)


# -- upscale --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "size"), [(64, 512), (1024, 512), (512, 512), (256, 100)])
def test_upscale_gives_an_rgb_square_of_the_size_asked(source: int, size: int) -> None:
    image = Image.new("L", (source, source), 90)
    out = upscale(image, size)
    assert out.mode == "RGB"
    assert out.size == (size, size)
    assert out.getpixel((size // 2, size // 2)) == (90, 90, 90)


def test_upscale_centre_crops_a_non_square_image() -> None:
    # Three vertical stripes: red | green | blue. The centre square is all green.
    pixels = np.zeros((100, 300, 3), dtype=np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:200] = (0, 255, 0)
    pixels[:, 200:] = (0, 0, 255)
    out = upscale(Image.fromarray(pixels), 64)
    assert out.size == (64, 64)
    for xy in [(0, 0), (63, 0), (32, 32), (0, 63), (63, 63)]:
        red, green, blue = out.getpixel(xy)
        assert green > 240 and red < 15 and blue < 15, (xy, out.getpixel(xy))


def test_upscale_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError, match="size"):
        upscale(solid((1, 2, 3), (8, 8)), 0)


# -- contact sheet --------------------------------------------------------------------------------

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 20)]
TILE, GAP = 64, 4
BACKGROUND = (18, 18, 18)


@pytest.mark.parametrize(
    ("count", "size"),
    [
        (1, (TILE + 2 * GAP, TILE + 2 * GAP)),
        (2, (2 * TILE + 3 * GAP, TILE + 2 * GAP)),
        (3, (2 * TILE + 3 * GAP, 2 * TILE + 3 * GAP)),
        (4, (2 * TILE + 3 * GAP, 2 * TILE + 3 * GAP)),
    ],
)
def test_contact_sheet_size(count: int, size: tuple[int, int]) -> None:
    images = [solid(colour, (32, 32)) for colour in COLOURS[:count]]
    assert contact_sheet(images, tile=TILE, gap=GAP).size == size


@pytest.mark.parametrize("count", [3, 4])
def test_contact_sheet_puts_each_image_in_its_cell(count: int) -> None:
    images = [solid(colour, (40, 40)) for colour in COLOURS[:count]]
    sheet = contact_sheet(images, tile=TILE, gap=GAP, background=BACKGROUND)
    cells = {
        0: (GAP, GAP),
        1: (2 * GAP + TILE, GAP),
        2: (GAP, 2 * GAP + TILE),
        3: (2 * GAP + TILE,) * 2,
    }
    for index, corner in cells.items():
        assert cell_origin(index, tile=TILE, gap=GAP, columns=2) == corner
        # The lower-right part of a cell: away from the number badge in the top-left corner.
        probe = (corner[0] + 3 * TILE // 4, corner[1] + 3 * TILE // 4)
        expected = COLOURS[index] if index < count else BACKGROUND
        assert sheet.getpixel(probe) == expected, index
    assert sheet.getpixel((GAP + TILE + GAP // 2, TILE // 2)) == BACKGROUND  # the gutter


def test_contact_sheet_numbers_each_tile_legibly() -> None:
    mid_grey = (128, 128, 128)
    tile = 256
    labelled = contact_sheet([solid(mid_grey)] * 2, tile=tile, gap=GAP)
    plain = contact_sheet([solid(mid_grey)] * 2, tile=tile, gap=GAP, labels=False)
    for index in range(2):
        left, top = cell_origin(index, tile=tile, gap=GAP, columns=2)
        corner = (left, top, left + tile // 4, top + tile // 4)
        assert (np.asarray(plain.crop(corner)) == mid_grey).all()
        badge = np.asarray(labelled.crop(corner)).reshape(-1, 3)  # (N, 3)
        lum = wcag_luminance(badge)
        # A white numeral (and ring) on a near-black disc: at least AAA contrast inside the badge.
        assert (lum.max() + 0.05) / (lum.min() + 0.05) >= 7
    # The two badges differ (1 and 2), the tiles around them do not.
    first = labelled.crop((GAP, GAP, GAP + tile // 4, GAP + tile // 4))
    second_left = GAP * 2 + tile
    second = labelled.crop((second_left, GAP, second_left + tile // 4, GAP + tile // 4))
    assert not np.array_equal(np.asarray(first), np.asarray(second))


def test_contact_sheet_needs_an_image() -> None:
    with pytest.raises(ValueError, match="images"):
        contact_sheet([])


# -- JPEG for Spotify ----------------------------------------------------------------------------


def encode_by_hand(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True, subsampling="4:2:0")
    return buffer.getvalue()


def test_noise_fits_spotify_as_base64() -> None:
    image = noise()  # the worst case for JPEG: nothing to compress
    data, quality = encode_jpeg_under(image)
    assert len(data) <= SPOTIFY_JPEG_MAX_BYTES
    assert len(base64.b64encode(data)) <= SPOTIFY_JPEG_LIMIT
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "JPEG" and decoded.size == (SIDE, SIDE) and decoded.mode == "RGB"
    decoded.load()
    assert 40 <= quality < 95
    # The highest quality that fits: one step up is too big.
    assert len(encode_by_hand(image, quality + 1)) > SPOTIFY_JPEG_MAX_BYTES


def test_a_smooth_image_keeps_top_quality() -> None:
    ramp = np.linspace(0, 255, SIDE, dtype=np.uint8)
    image = Image.fromarray(np.stack([np.tile(ramp, (SIDE, 1))] * 3, axis=-1), "RGB")
    data, quality = encode_jpeg_under(image)
    assert quality == 95
    assert Image.open(io.BytesIO(data)).size == (SIDE, SIDE)


def test_jpeg_is_baseline_420_without_metadata() -> None:
    image = noise((64, 64)).convert("RGBA")
    exif = Image.Exif()
    exif[0x010E] = "secret description"  # ImageDescription
    image.info["exif"] = exif.tobytes()
    image.info["comment"] = b"secret comment"
    data, _ = encode_jpeg_under(image)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "RGB"
    assert JpegImagePlugin.get_sampling(decoded) == 2  # 4:2:0
    assert "progressive" not in decoded.info and "progression" not in decoded.info
    assert b"Exif" not in data and b"secret" not in data


def test_jpeg_shrinks_the_image_when_quality_alone_is_not_enough() -> None:
    image = noise()
    assert len(encode_by_hand(image, 40)) > 40_000  # so min_quality alone cannot fit
    data, quality = encode_jpeg_under(image, 40_000)
    assert len(data) <= 40_000 and 40 <= quality <= 95
    assert Image.open(io.BytesIO(data)).width < SIDE


def test_jpeg_names_an_impossible_limit() -> None:
    with pytest.raises(ValueError, match="max_bytes=100"):
        encode_jpeg_under(noise((64, 64)), 100)


# -- WCAG -----------------------------------------------------------------------------------------


def test_wcag_reference_values() -> None:
    assert relative_luminance((255, 255, 255)) == pytest.approx(1.0)
    assert relative_luminance((0, 0, 0)) == 0.0
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast_ratio((255, 255, 255), (0, 0, 0)) == pytest.approx(21.0)
    # The classic AA boundary for grey on white: #777 just fails 4.5, #767676 just passes.
    assert contrast_ratio((0x77,) * 3, (255, 255, 255)) == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio((0x76,) * 3, (255, 255, 255)) == pytest.approx(4.54, abs=0.01)
    assert relative_luminance((255, 0, 0)) == pytest.approx(0.2126)


def test_wcag_rejects_a_bad_colour() -> None:
    with pytest.raises(ValueError, match="rgb"):
        relative_luminance((256, 0, 0))


# -- the title ------------------------------------------------------------------------------------


def half_busy(busy_top: bool) -> Image.Image:
    pixels = np.full((SIDE, SIDE, 3), 200, dtype=np.uint8)
    busy = np.asarray(noise((SIDE, SIDE // 2), seed=5))
    if busy_top:
        pixels[: SIDE // 2] = busy
    else:
        pixels[SIDE // 2 :] = busy
    return Image.fromarray(pixels, "RGB")


def test_title_goes_to_the_calm_bottom() -> None:
    plan = plan_title(half_busy(busy_top=True), "Late Night Drive")
    assert plan.box[1] >= SIDE // 2
    assert plan.region in {"bottom", "lower"}


def test_title_goes_to_the_calm_top() -> None:
    plan = plan_title(half_busy(busy_top=False), "Late Night Drive")
    assert plan.box[3] <= SIDE // 2
    assert plan.region in {"top", "upper"}


BACKGROUNDS = {
    "white": solid((255, 255, 255)),
    "black": solid((0, 0, 0)),
    # Between the two AA boundaries: neither white nor near-black text reaches 4.5 unaided.
    "mid-grey": solid((120, 120, 120)),
    "noise": noise(seed=7),
}


@pytest.mark.parametrize("name", BACKGROUNDS)
@pytest.mark.parametrize("min_contrast", [4.5, 7.0])
def test_text_contrasts_with_every_pixel_under_it(name: str, min_contrast: float) -> None:
    image = BACKGROUNDS[name]
    before = np.asarray(image).copy()
    plan = plan_title(image, "Sunday Morning Coffee", min_contrast=min_contrast)
    out = render_title(image, plan)

    assert min_contrast_under_text(out, plan) >= min_contrast
    assert plan.worst_contrast >= min_contrast
    # The text really is there, in the planned colour.
    glyphs = np.asarray(title_mask(plan, out.size))
    assert (glyphs == 255).sum() > 500
    assert (np.asarray(out)[glyphs == 255] == plan.text_color).all()
    # A plate only where one is needed.
    if name in {"white", "black"}:
        assert plan.plate_alpha == 0
    if name in {"mid-grey", "noise"}:
        assert plan.plate_alpha > 0
    np.testing.assert_array_equal(np.asarray(image), before)  # the input is untouched


def test_overlay_title_is_plan_then_render() -> None:
    image = BACKGROUNDS["noise"]
    expected = render_title(image, plan_title(image, "Rainy Day"))
    np.testing.assert_array_equal(
        np.asarray(overlay_title(image, "Rainy Day")), np.asarray(expected)
    )


def test_a_long_title_wraps_shrinks_and_stays_inside() -> None:
    image = solid((40, 40, 90))
    short = plan_title(image, "Focus")
    plan = plan_title(
        image, "Songs for the long drive home through the mountains at night in winter"
    )
    assert 2 <= len(plan.lines) <= 3
    assert plan.font_size < short.font_size
    left, top, right, bottom = plan.box
    assert 0 <= left < right <= SIDE and 0 <= top < bottom <= SIDE
    ink = title_mask(plan, image.size).getbbox()
    assert ink is not None
    assert left <= ink[0] and top <= ink[1] and ink[2] <= right and ink[3] <= bottom
    assert ink[2] - ink[0] <= 0.9 * SIDE


def test_an_endless_title_is_cut_with_an_ellipsis() -> None:
    image = solid((200, 180, 40))
    plan = plan_title(image, " ".join(["Supercalifragilisticexpialidocious"] * 12))
    assert len(plan.lines) == 3
    assert plan.lines[-1].endswith("…")
    ink = title_mask(plan, image.size).getbbox()
    assert ink is not None and ink[0] >= 0 and ink[2] <= SIDE


@pytest.mark.parametrize("title", ["", "   ", "\n\t"])
def test_an_empty_title_is_refused(title: str) -> None:
    with pytest.raises(ValueError, match="title"):
        plan_title(solid((0, 0, 0), (64, 64)), title)


@pytest.mark.parametrize("font", ["system", "bundled"])
def test_a_unicode_title_renders(font: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if font == "bundled":
        # Pretend DejaVu is missing, so Pillow's own (Latin-only) font is used.
        monkeypatch.setattr(models.title, "system_font_path", lambda: None)
    image = BACKGROUNDS["noise"]
    plan = plan_title(image, "Café Noir — 夜")
    if font == "bundled":
        assert plan.font_path is None
    out = render_title(image, plan)
    assert out.size == image.size
    assert min_contrast_under_text(out, plan) >= 4.5


def test_a_bad_font_path_is_named() -> None:
    with pytest.raises(ValueError, match="font_path"):
        plan_title(solid((0, 0, 0), (64, 64)), "Hi", font_path="/nonexistent/font.ttf")


# -- hostile titles -------------------------------------------------------------------------------


def test_a_ten_megabyte_title_is_planned_in_bounded_time() -> None:
    """A subprocess with a deadline, so a regression fails the test instead of hanging it."""
    script = (
        "from PIL import Image\n"
        "from models.title import plan_title\n"
        "plan = plan_title(Image.new('RGB', (512, 512)), 'word ' * 2_000_000)\n"
        "assert len(plan.lines) <= 3 and plan.lines[-1].endswith('…'), plan.lines\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30


@settings(max_examples=examples(60), deadline=None)
@given(title=st.text(max_size=400))
def test_any_title_is_planned_inside_the_image_or_refused_by_name(title: str) -> None:
    image = solid((90, 30, 60), (96, 96))
    if not title.split():
        with pytest.raises(ValueError, match="title must contain visible text"):
            plan_title(image, title)
        return
    plan = plan_title(image, title)
    left, top, right, bottom = plan.box
    assert 0 <= left < right <= 96 and 0 <= top < bottom <= 96
    assert 1 <= len(plan.lines) <= 3
    assert render_title(image, plan).size == image.size
