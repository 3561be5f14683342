"""The real generation path on the embedded tiny diffusers pipeline (CPU, offline): the model
build, the registry, and :class:`DiffusersRunner` (seeds, batching, progress, black-image
retries, LoRA). Only the safety checker is simulated, by wrapping the real pipeline."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models.embedded import (
    EMBEDDED_VERSION,
    INFO_FILE,
    NATIVE_SIZE,
    build_embedded_pipeline,
    ensure_embedded,
    packaged_info,
)
from models.errors import ModelUnavailable
from models.jobs import GeneratedImage, GenerationParams, ImageSpec, RunInterrupted
from models.registry import (
    PRESETS,
    list_models,
    load_pipeline,
    pick_device,
    resolve_model,
)
from models.runner import DiffusersRunner, retry_seed

pytestmark = pytest.mark.slow

STEPS = 4  # enough to exercise the scheduler; the timing test uses the preset's 20


@dataclass
class RecordingControl:
    """A RunControl that records progress and can interrupt after a given step."""

    stop_after: int | None = None
    steps: list[tuple[int, int]] = field(default_factory=list)

    def step(self, step: int, total: int) -> None:
        self.steps.append((step, total))
        if self.stop_after is not None and step >= self.stop_after:
            raise RunInterrupted


def params(steps: int = STEPS, **changes: Any) -> GenerationParams:
    base = {"model": "embedded", "width": 128, "height": 128, "steps": steps, "guidance": 7.5}
    return GenerationParams(**{**base, **changes})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def runner(cache_dir: Path, embedded_model_dir: Path) -> DiffusersRunner:
    return DiffusersRunner(device="cpu", cache_dir=cache_dir)


# -- the embedded model ----------------------------------------------------------------------


def test_embedded_build_is_deterministic_and_loads_offline(
    embedded_model_dir: Path, tmp_path: Path
) -> None:
    import os

    from diffusers import DiffusionPipeline

    rebuilt = build_embedded_pipeline(tmp_path / "again")
    files = sorted(p.relative_to(embedded_model_dir) for p in embedded_model_dir.rglob("*"))
    assert files == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*"))
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert len(weights) == 3  # unet, vae, text encoder
    for name in files:
        if (embedded_model_dir / name).is_file():
            assert (embedded_model_dir / name).read_bytes() == (rebuilt / name).read_bytes(), name
    info = json.loads((embedded_model_dir / INFO_FILE).read_text())
    assert info["trained"] == (packaged_info() is not None)  # what this checkout ships

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    pipe = DiffusionPipeline.from_pretrained(embedded_model_dir, local_files_only=True)
    assert pipe.vae_scale_factor * pipe.unet.config.sample_size == NATIVE_SIZE == 128
    assert pipe.tokenizer.model_max_length == 77
    assert len(pipe.tokenizer) == 49408  # CLIP's own vocabulary
    assert len(pipe.tokenizer("a playlist cover ♫").input_ids) > 2  # any text encodes


def test_the_packaged_model_is_small_and_float16() -> None:
    """Issue 29's budget: the shipped model, vocabulary included, is at most 20 MB."""
    from safetensors import safe_open

    from models.clip_tokenizer import VOCAB_FILE
    from models.embedded import COMPONENTS, PACKAGED, WEIGHTS_FILE

    if packaged_info() is None:
        pytest.skip("this checkout ships no trained embedded weights")
    files = [p for p in PACKAGED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) + VOCAB_FILE.stat().st_size <= 20_000_000
    for component in COMPONENTS:
        with safe_open(PACKAGED / component / WEIGHTS_FILE, "pt") as weights:
            name = next(iter(weights.keys()))
            assert str(weights.get_tensor(name).dtype) == "torch.float16"


def test_without_packaged_weights_the_architecture_is_built_untrained(tmp_path: Path) -> None:
    built = build_embedded_pipeline(tmp_path / "model", package=tmp_path / "no-package")
    info = json.loads((built / INFO_FILE).read_text())
    assert info["trained"] is False and "python -m training miniature" in info["note"]


def test_ensure_embedded_reuses_the_built_folder(cache_dir: Path, embedded_model_dir: Path) -> None:
    assert embedded_model_dir == cache_dir / "models" / EMBEDDED_VERSION
    before = (embedded_model_dir / INFO_FILE).stat().st_mtime_ns
    assert ensure_embedded(cache_dir) == embedded_model_dir
    assert (embedded_model_dir / INFO_FILE).stat().st_mtime_ns == before
    with pytest.raises(FileExistsError):
        build_embedded_pipeline(embedded_model_dir)
    # No half-built temporary folders are left beside it.
    leftovers = [p for p in embedded_model_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


# -- registry --------------------------------------------------------------------------------


def test_resolve_presets() -> None:
    assert list_models()[0] == "auto"
    assert set(list_models()) == {
        "auto",
        "embedded",
        "sd15-random",
        "sd-turbo-random",
        "small-sd",
        "sd15",
        "sd-turbo",
        "deepfloyd-if",
    }
    embedded = resolve_model("embedded")
    assert (embedded.native_size, embedded.steps, embedded.guidance) == (128, 20, 4.0)
    assert embedded.is_embedded and embedded.repo_id is None
    turbo = resolve_model("sd-turbo")
    assert (turbo.repo_id, turbo.steps, turbo.guidance) == ("stabilityai/sd-turbo", 1, 0.0)
    assert resolve_model("small-sd").native_size == 256
    assert resolve_model("deepfloyd-if").kind == "if"
    assert PRESETS["deepfloyd-if"].stage2_repo_id == "DeepFloyd/IF-II-L-v1.0"


def test_resolve_local_folder(embedded_model_dir: Path, tmp_path: Path) -> None:
    spec = resolve_model(str(embedded_model_dir))
    assert spec.path == embedded_model_dir.resolve()
    assert spec.native_size == 128  # unet sample_size 16 x vae scale 8
    assert (spec.steps, spec.guidance) == (25, 7.5)
    with pytest.raises(ModelUnavailable, match=r"model_index\.json"):
        resolve_model(str(tmp_path))


def test_unknown_model_lists_the_known_names() -> None:
    with pytest.raises(ModelUnavailable) as caught:
        resolve_model("stable-diffusion-9")
    message = str(caught.value)
    assert "'stable-diffusion-9'" in message
    assert all(name in message for name in list_models())


def test_lora_path_is_checked(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve_model("embedded", lora=str(missing))
    pickled = tmp_path / "lora.bin"
    pickled.write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match=r"\.safetensors"):
        resolve_model("embedded", lora=str(pickled))
    garbage = tmp_path / "pytorch_lora_weights.safetensors"
    garbage.write_bytes(b"x")  # the header is read before any work: garbage is refused
    with pytest.raises(ModelUnavailable, match="not a readable safetensors file"):
        resolve_model("embedded", lora=str(tmp_path))
    from safetensors.numpy import save_file

    save_file({"lora_A.weight": np.zeros((2, 2), np.float32)}, str(garbage))
    assert resolve_model("embedded", lora=str(tmp_path)).lora == (
        tmp_path / "pytorch_lora_weights.safetensors"
    )
    with pytest.raises(ModelUnavailable, match="deepfloyd-if"):
        resolve_model("deepfloyd-if", lora=str(tmp_path))


def test_uncached_hub_model_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(ModelUnavailable) as caught:
        load_pipeline(resolve_model("small-sd"), device="cpu", cache_dir=tmp_path)
    message = str(caught.value)
    assert "OFA-Sys/small-stable-diffusion-v0" in message
    assert "cache" in message and str(tmp_path / "hf") in message
    assert "COVER_ALLOW_DOWNLOADS" in message
    # The pull command as it runs: `models pull` takes a preset's name, not the bare command.
    assert "`python -m bot models pull small-sd`" in message


def test_the_fetch_command_names_the_preset_of_a_repo() -> None:
    from models.hub import fetch_command

    assert "models pull deepfloyd-if`" in fetch_command("DeepFloyd/IF-II-L-v1.0")  # stage 2
    assert fetch_command("someone/their-model") == "`hf download someone/their-model`"


def test_pick_device() -> None:
    assert pick_device("auto") in {"cpu", "cuda", "mps"}
    assert pick_device("CPU") == "cpu"
    with pytest.raises(ModelUnavailable, match="'tpu'"):
        pick_device("tpu")
    with pytest.raises(ModelUnavailable, match="'cuda:x'"):
        pick_device("cuda:x")


# -- runner: seeds, batching, progress ---------------------------------------------------------


def test_same_seed_same_image_and_batch_independence(runner: DiffusersRunner) -> None:
    specs = [
        ImageSpec("night drive playlist cover image", seed=1),
        ImageSpec("sunday morning jazz playlist cover image", "blurry", seed=2),
        ImageSpec("gym hits playlist cover image", seed=3),
    ]
    first = runner(params(), specs, RecordingControl())
    again = runner(params(), specs, RecordingControl())
    assert [g.spec for g in first] == specs
    assert all(g.image.size == (128, 128) and g.black_retries == 0 for g in first)
    assert [g.seed for g in first] == [1, 2, 3]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(pixels(a.image), pixels(b.image))  # same seed → same pixels

    # Different seeds (even with the same prompt) → different images.
    other_seed = runner(params(), [ImageSpec(specs[0].prompt, seed=99)], RecordingControl())
    assert np.abs(pixels(other_seed[0].image) - pixels(first[0].image)).mean() > 5

    # Batched with others or alone: the same image, up to rounding. CPU matmul kernels depend on
    # the batch size, so pixels may move by a level: measured at most 1 of 255 (2 cores, torch
    # 2.13, up to 20 steps); the bound below leaves one level of headroom.
    alone = runner(params(), [specs[1]], RecordingControl())
    difference = np.abs(pixels(alone[0].image) - pixels(first[1].image))
    assert difference.max() <= 2, difference.max()


def test_progress_reports_every_step_and_can_be_interrupted(runner: DiffusersRunner) -> None:
    control = RecordingControl()
    runner(params(steps=5), [ImageSpec("a", seed=1)], control)
    assert control.steps == [(i, 5) for i in range(1, 6)]

    stopping = RecordingControl(stop_after=2)
    with pytest.raises(RunInterrupted):
        runner(params(steps=5), [ImageSpec("a", seed=1)], stopping)
    assert stopping.steps == [(1, 5), (2, 5)]


def test_unknown_model_in_params_is_a_clear_error(runner: DiffusersRunner) -> None:
    with pytest.raises(ModelUnavailable, match="'no-such-model'"):
        runner(params(model="no-such-model"), [ImageSpec("a")], RecordingControl())


def test_timing_four_images_at_native_size(runner: DiffusersRunner) -> None:
    """Measured, not asserted (machines differ): 4 images, 128 px, 20 steps, guidance 7.5."""
    specs = [ImageSpec(f"playlist {i} cover image", seed=i) for i in range(4)]
    runner(params(), specs[:1], RecordingControl())  # warm up
    start = time.perf_counter()
    images = runner(params(steps=20), specs, RecordingControl())
    elapsed = time.perf_counter() - start
    print(f"\nembedded model: 4 images, 128 px, 20 steps in {elapsed:.2f} s on {runner.device}")
    assert len(images) == 4


# -- runner: black images ----------------------------------------------------------------------


class BlackeningPipeline:
    """A real pipeline whose outputs for some seeds come back black, like a safety checker's.

    ``flag`` also sets ``nsfw_content_detected`` (as diffusers' checker does); without it only
    the pixels tell, which exercises ``is_black``. Records the seeds of every call.
    """

    def __init__(self, pipe: Any, black_seeds: set[int], *, flag: bool) -> None:
        self.pipe, self.black_seeds, self.flag = pipe, black_seeds, flag
        self.calls: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:  # the rest (vae, encode_prompt…) is the real one's
        return getattr(self.pipe, name)

    def __call__(self, **kwargs: Any) -> Any:
        from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

        seeds = [generator.initial_seed() for generator in kwargs["generator"]]
        self.calls.append(seeds)
        images = self.pipe(**kwargs).images
        black = [seed in self.black_seeds for seed in seeds]
        # The runner asks for float arrays (output_type="np", so that NaN shows): black is 0.
        images = [
            np.zeros_like(image) if is_black else image
            for image, is_black in zip(images, black, strict=True)
        ]
        return StableDiffusionPipelineOutput(
            images=images, nsfw_content_detected=black if self.flag else None
        )


class BlackeningRunner(DiffusersRunner):
    def __init__(self, black_seeds: set[int], *, flag: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.black_seeds, self.flag = black_seeds, flag
        self.pipe: BlackeningPipeline | None = None

    def _load(self, model: Any, lora_scale: float) -> Any:
        self.pipe = BlackeningPipeline(
            super()._load(model, lora_scale), self.black_seeds, flag=self.flag
        )
        return self.pipe


def is_all_black(generated: GeneratedImage) -> bool:
    return int(pixels(generated.image).max()) == 0


@pytest.mark.parametrize("flag", [True, False], ids=["nsfw-flag", "black-pixels"])
def test_black_image_is_regenerated_with_a_new_seed(cache_dir: Path, flag: bool) -> None:
    runner = BlackeningRunner({5}, flag=flag, device="cpu", cache_dir=cache_dir)
    ok, retried = runner(
        params(), [ImageSpec("a", seed=4), ImageSpec("b", seed=5)], RecordingControl()
    )

    assert runner.pipe is not None
    assert runner.pipe.calls == [[4, 5], [retry_seed(5, 1)]]  # only the black one is redone
    assert (ok.seed, ok.black_retries) == (4, 0)
    assert (retried.seed, retried.black_retries) == (5 + 1_000_003, 1)
    assert retried.spec.seed == 5
    assert not is_all_black(ok) and not is_all_black(retried)


def test_black_retries_are_bounded(cache_dir: Path) -> None:
    always_black = {7, *(retry_seed(7, attempt) for attempt in range(1, 10))}
    runner = BlackeningRunner(
        always_black, flag=True, device="cpu", cache_dir=cache_dir, black_retries=2
    )
    (generated,) = runner(params(), [ImageSpec("a", seed=7)], RecordingControl())

    assert runner.pipe is not None
    assert runner.pipe.calls == [[7], [retry_seed(7, 1)], [retry_seed(7, 2)]]
    assert generated.black_retries == 2 and generated.seed == retry_seed(7, 2)
    assert is_all_black(generated) and generated.blocked  # the cover service drops it


# -- runner: LoRA ------------------------------------------------------------------------------


def make_lora(embedded_model_dir: Path, folder: Path) -> Path:
    """Train-free LoRA on the tiny UNet's attention layers, saved as diffusers saves LoRAs."""
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = DiffusionPipeline.from_pretrained(embedded_model_dir).unet
    unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        )
    )
    # PEFT starts lora_B at zero (a no-op adapter); give it weights as training would.
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return folder / "pytorch_lora_weights.safetensors"


def test_lora_changes_the_image(
    runner: DiffusersRunner, embedded_model_dir: Path, tmp_path: Path
) -> None:
    lora_file = make_lora(embedded_model_dir, tmp_path / "lora")
    assert resolve_model("embedded", lora=str(tmp_path / "lora")).lora == lora_file.resolve()
    spec = [ImageSpec("neon synthwave playlist cover image", seed=11)]

    base = runner(params(), spec, RecordingControl())[0]
    with_lora = runner(params(lora=str(lora_file)), spec, RecordingControl())[0]
    assert np.abs(pixels(with_lora.image) - pixels(base.image)).mean() > 1
    assert runner.loaded == [("embedded", str(lora_file.resolve()), 1.0)]  # LRU of one

    # Scale 0 fuses nothing: back to the base image (fused weights may round differently).
    zero = runner(params(lora=str(lora_file), lora_scale=0.0), spec, RecordingControl())[0]
    assert np.abs(pixels(zero.image) - pixels(base.image)).max() <= 2


def test_the_embedded_model_ignores_negative_prompts(runner: DiffusersRunner) -> None:
    """It never learned "blurry, watermark, ..."; guiding away from words it cannot read would
    push in a random direction, so its negative prompt is always the empty one."""
    assert resolve_model("embedded").negative_prompts is False
    assert resolve_model("sd15").negative_prompts is True
    plain = runner(params(), [ImageSpec("jazz drive", seed=5)], RecordingControl())
    negative = runner(
        params(),
        [ImageSpec("jazz drive", negative_prompt="blurry, watermark", seed=5)],
        RecordingControl(),
    )
    assert plain[0].image.tobytes() == negative[0].image.tobytes()
    assert negative[0].spec.negative_prompt == "blurry, watermark"  # the request is unchanged


def _as_shipped(runner: DiffusersRunner, specs: list[ImageSpec]) -> list[Any]:
    """``specs`` through the shipped model with its own steps, guidance and native size."""
    preset = resolve_model("embedded")
    return runner(
        params(steps=preset.steps, guidance=preset.guidance, width=NATIVE_SIZE, height=NATIVE_SIZE),
        specs,
        RecordingControl(),
    )


def test_the_shipped_model_paints_the_palette_its_genre_word_names(
    runner: DiffusersRunner,
) -> None:
    """The shipped model's learned skill (docs/miniature.md): a genre word sets the palette.
    Three seeds of "<genre> playlist cover image" for each of the 12 genres, scored by the
    study's palette test against synthetic covers of every genre; chance is 1 in 12."""
    from eval.prompt_following import colour_histogram, prompt_following
    from models.embedded import PACKAGED
    from training.synthetic import GENRES, draw_example

    assert packaged_info(PACKAGED)["trained"] is True  # not the random fallback
    real, real_labels = [], []
    for index in range(360):
        image, meta = draw_example("covers", "test", index, seed=0, size=64)
        real.append(colour_histogram(np.asarray(image)))
        real_labels.append(meta["genre"])
    specs = [
        ImageSpec(f"{genre.name} playlist cover image", seed=seed)
        for genre in GENRES
        for seed in range(3)
    ]
    made = _as_shipped(runner, specs)
    generated = [colour_histogram(np.asarray(m.image.convert("RGB"))) for m in made]
    labels = [genre.name for genre in GENRES for _ in range(3)]
    result = prompt_following(np.stack(real), real_labels, np.stack(generated), labels, resamples=0)
    assert result.chance == pytest.approx(1 / 12)
    assert result.accuracy.value >= 3 * result.chance, result.per_label


def test_the_shipped_model_draws_the_layout_its_activity_word_names(
    runner: DiffusersRunner,
) -> None:
    """The 128 px model's second skill (docs/embedded.md): an activity word sets the
    composition. Three seeds of "<activity> pop playlist cover image" for each of the 8
    activities, scored by the composition classifier (eval/composition.py) fitted on synthetic
    train covers; the 64 px model it replaced scored 18.3% against a null of 17.6% on the test
    split, so this fails for a model that paints palettes only."""
    from eval.composition import CompositionClassifier, activity_labels, composition_features
    from training.synthetic import ACTIVITIES, draw_example

    features, rows = [], []
    for index in range(900):
        image, meta = draw_example("covers", "train", index, seed=0, size=64)
        features.append(composition_features(image))
        rows.append(meta)
    classifier = CompositionClassifier.fit(np.stack(features), activity_labels(rows), steps=200)
    specs = [
        ImageSpec(f"{activity.words[0]} pop playlist cover image", seed=seed)
        for activity in ACTIVITIES
        for seed in range(3)
    ]
    made = _as_shipped(runner, specs)
    predicted = classifier.predict(np.stack([composition_features(m.image) for m in made]))
    truth = [activity.name for activity in ACTIVITIES for _ in range(3)]
    hits = sum(p == t for p, t in zip(predicted, truth, strict=True))
    assert hits >= 8, list(zip(truth, predicted, strict=True))  # chance: 24 / 9 ≈ 2.7
