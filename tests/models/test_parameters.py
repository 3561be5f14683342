"""Generation parameters in image files (models/parameters.py): the ``parameters`` text other
tools read, read back by ``--variations-of``; the JPEG comment."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from models.errors import ParametersUnreadable
from models.parameters import (
    LIMITS,
    ImageParameters,
    comment_overhead,
    parse_parameters,
    png_info,
    read_png_parameters,
    with_jpeg_comment,
)
from tests.properties import examples

SAMPLE = ImageParameters(
    prompt="late night drive playlist cover image",
    negative_prompt="blurry, low quality",
    steps=20,
    sampler="DPMSolverMultistepScheduler",
    cfg_scale=7.5,
    seed=1234,
    width=512,
    height=512,
    model="sd15",
)


def test_the_text_is_the_widely_used_layout():
    assert SAMPLE.text() == (
        "late night drive playlist cover image\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 20, Sampler: DPMSolverMultistepScheduler, CFG scale: 7.5, Seed: 1234, "
        "Size: 512x512, Model: sd15"
    )


def test_a_png_carries_it_and_pillow_reads_it_back(tmp_path):
    path = tmp_path / "candidate-1.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(SAMPLE))
    assert Image.open(path).text["parameters"] == SAMPLE.text()
    assert read_png_parameters(path) == SAMPLE


def test_other_tools_keys_and_quoted_values_are_kept():
    text = (
        "a cat\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 768x512, "
        'Model hash: abc123, Model: "my, model", Lora hashes: "x: 1, y: 2", Denoising strength: 0.5'
    )
    found = parse_parameters(text)
    assert (found.prompt, found.negative_prompt, found.sampler) == ("a cat", "", "Euler a")
    assert (found.width, found.height, found.model, found.strength) == (768, 512, "my, model", 0.5)
    assert found.extra == {"Model hash": "abc123", "Lora hashes": "x: 1, y: 2"}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("just a prompt", "no settings line"),
        ("a cat\nSampler: Euler, CFG scale: 7, Seed: 5, Size: 8x8, Model: m", "'Steps'"),
        ("a cat\nSteps: 30, CFG scale: 7, Seed: 5, Size: 8x8", "'Model'"),
        ("a cat\nSteps: many, CFG scale: 7, Seed: 5, Size: 8x8, Model: m", "malformed"),
        ("a cat\nSteps: 3, CFG scale: 7, Seed: 5, Size: 8 by 8, Model: m", "WIDTHxHEIGHT"),
        ('a cat\nSteps: 3, Model: "unterminated', "broken quoted value for 'Model'"),
    ],
)
def test_bad_parameters_are_named(text: str, names: str):
    with pytest.raises(ParametersUnreadable, match=names):
        parse_parameters(text)


def test_an_image_without_parameters_is_refused_by_name(tmp_path):
    plain = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(ParametersUnreadable, match=r"photo\.png carries no generation parameters"):
        read_png_parameters(plain)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ParametersUnreadable, match=r"notes\.png is not a readable image"):
        read_png_parameters(tmp_path / "notes.png")
    with pytest.raises(ParametersUnreadable, match=r"no file gone\.png"):
        read_png_parameters(tmp_path / "gone.png")


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=examples(200), deadline=None)
@given(
    prompt=_TEXT.filter(lambda s: s.strip()),
    negative=_TEXT,
    steps=st.integers(1, 500),
    sampler=_TEXT,
    cfg=st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 2)),
    seed=st.integers(0, 2**62),
    size=st.tuples(st.integers(1, 4096), st.integers(1, 4096)),
    model=_TEXT.filter(lambda s: s.strip()),
    strength=st.none() | st.floats(0.05, 1).map(lambda x: round(x, 2)),
)
def test_any_parameters_survive_the_round_trip(
    prompt, negative, steps, sampler, cfg, seed, size, model, strength
):
    """Whatever the prompt, model name or sampler holds (commas, colons, quotes, newlines),
    reading the text back gives the same parameters; whitespace runs become single spaces in
    the prompts, and names keep their own."""
    written = ImageParameters(
        prompt, negative, steps, sampler.strip(), cfg, seed, *size, model.strip(), strength
    )
    read = parse_parameters(written.text())
    assert read.prompt == " ".join(prompt.split())
    assert read.negative_prompt == " ".join(negative.split())
    assert (read.steps, read.sampler, read.seed, read.width, read.height, read.model) == (
        steps,
        sampler.strip(),
        seed,
        *size,
        model.strip(),
    )
    assert read.cfg_scale == pytest.approx(cfg) and read.strength == (
        None if strength is None else pytest.approx(strength)
    )


@settings(max_examples=examples(100), deadline=None)
@given(st.text(max_size=2000))
def test_any_text_is_read_or_refused_clearly(text):
    try:
        parse_parameters(text)
    except ParametersUnreadable as error:
        assert str(error)


def test_the_jpeg_comment_fits_the_budget_and_reads_back():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    comment = SAMPLE.comment()
    assert comment == "playlist-cover: sd15, seed 1234, 20 steps, CFG 7.5"
    tagged = with_jpeg_comment(jpeg, comment)
    assert len(tagged) == len(jpeg) + comment_overhead(comment)
    with Image.open(io.BytesIO(tagged)) as image:
        assert image.info["comment"] == comment.encode()
        image.load()  # still a valid JPEG
    with pytest.raises(ValueError, match="not a JPEG"):
        with_jpeg_comment(b"\x89PNG", comment)


# -- issue 31: the text is untrusted ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(["Negative prompt: ", "Negative prompt:", "\\", "\\Negative prompt: "]),
    rest=_TEXT.filter(lambda s: s.strip()),
)
def test_a_prompt_that_looks_like_a_negative_line_stays_the_prompt(prefix, rest):
    """A playlist called "Negative prompt: x" read back as an empty prompt and a negative one."""
    prompt = " ".join((prefix + rest).split())
    read = parse_parameters(dataclasses.replace(SAMPLE, prompt=prompt, negative_prompt="").text())
    assert (read.prompt, read.negative_prompt) == (prompt, "")


_NUMBER = st.one_of(
    st.integers(-(10**7), 10**7).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@settings(max_examples=300, deadline=None)
@given(steps=_NUMBER, cfg=_NUMBER, width=_NUMBER, strength=_NUMBER)
def test_whatever_a_file_says_passes_only_within_the_flags_limits(steps, cfg, width, strength):
    """Read, then checked: either a clear refusal, or every value inside LIMITS."""
    text = (
        f"a cat\nSteps: {steps}, CFG scale: {cfg}, Seed: 1, Size: {width}x64, Model: embedded, "
        f"Denoising strength: {strength}"
    )
    try:
        read = parse_parameters(text)
        read.check()
    except ParametersUnreadable as error:
        assert str(error) and len(str(error)) < 300
        return
    for setting, value in (
        ("steps", read.steps),
        ("guidance", read.cfg_scale),
        ("size", read.width),
        ("strength", read.strength),
    ):
        low, high = LIMITS[setting]
        assert math.isfinite(value) and low <= value <= high


@pytest.mark.parametrize("kind", ["settings line", "quoted value", "size"])
def test_a_huge_parameters_text_makes_a_short_refusal(kind):
    garbage = "x" * 10_000
    text = {
        "settings line": f"a cat\nSteps: 1, {garbage}",
        "quoted value": f'a cat\nSteps: 1, {garbage}: "broken',
        "size": f"a cat\nSteps: 1, CFG scale: 1, Seed: 1, Size: {garbage}, Model: m",
    }[kind]
    with pytest.raises(ParametersUnreadable) as caught:
        parse_parameters(text)
    assert len(str(caught.value)) < 300
