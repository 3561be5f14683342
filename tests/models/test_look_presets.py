"""``--from-image`` with every preset, offline (the stand-ins of tests/models/test_hub_presets.py):
each model's image-to-image form starts from the picture – the one the variations use (IF: both
stages') – and its PNGs say so."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.__main__ import main
from bot.app.look import LOOK_STRENGTH
from tests.conftest import HUB_PRESETS
from tests.models.test_hub_presets import _cover, _use_hub
from tests.models.test_hub_presets import cli_env as cli_env  # the fixture

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ("embedded", *HUB_PRESETS))
def test_each_preset_starts_from_a_given_picture(
    name: str, standin_hub: Path, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _use_hub(monkeypatch, standin_hub)
    picture = cli_env / "start.jpg"
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (240, 120, 20)).save(out, format="JPEG")
    picture.write_bytes(out.getvalue())

    assert main(_cover("--model", name, "--count", "1", "--from-image", str(picture))) == 0
    [png] = [Path(p) for p in capsys.readouterr().out.split() if p.endswith("candidate-1.png")]
    with Image.open(png) as image:
        written = image.text["parameters"]
    assert f"Model: {name}" in written and f"Denoising strength: {LOOK_STRENGTH:g}" in written
