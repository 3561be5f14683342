"""``python -m training``: real training runs of the embedded tiny pipeline on a generated dataset
(32 px, a few steps), their outputs loaded back through the registry, resume, EMA and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.__main__ import main
from training.commands.fine_tune import train_parser
from training.config import PRESETS, TrainingError, config_from_preset
from training.data import (
    DatasetError,
    EpochShuffle,
    load_examples,
    prepare_image,
    sample_rng,
)
from training.objective import min_snr_weights

pytestmark = pytest.mark.slow

TINY = {  # seed001 shrunk: 32 px, batch 2 x 2 micro-batches, 4 steps
    "resolution": 32,
    "train_batch_size": 2,
    "gradient_accumulation_steps": 2,
    "max_train_steps": 4,
    "checkpointing_steps": 2,
    "validation_inference_steps": 2,
    "seed": 7,
    # Exercise the random parts too: random crops (flips are on in seed001), offset noise, Min-SNR.
    "center_crop": False,
    "noise_offset": 0.05,
    "snr_gamma": 5.0,
}
COUNT = 12  # images: 6 batches an epoch, so 4 steps x 2 micro-batches cross an epoch's end


def make_dataset(folder: Path, count: int = COUNT) -> Path:
    """``count`` images of different sizes (random blocks of colour) with captions."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        blocks = (rng.random((4, 5, 3)) * 255).astype("uint8")
        size = (40 + index % 3 * 8, 36 + index % 2 * 12)
        Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).save(folder / f"{index}.png")
        rows.append({"file_name": f"{index}.png", "caption": f"mix {index} playlist cover image"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """32 px tensors are too small to share among threads, and on a busy 2-core machine two
    OpenMP threads that wait for each other make a step 10-60x slower (measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dataset"))


def tiny_config(dataset: Path, out: Path, cache_dir: Path, **overrides):
    values = {"data": str(dataset), "caption_column": "caption", "out": str(out)}
    values |= {"cache_dir": str(cache_dir), **TINY, **overrides}
    return config_from_preset("seed001", **values)


def generate(pipe, seed: int = 0) -> np.ndarray:
    import torch

    result = pipe(
        "mix playlist cover image",
        num_inference_steps=2,
        height=32,
        width=32,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    )
    return result.images[0]


def unet_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


# -- the full fine-tune with EMA -------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory, cache_dir, embedded_model_dir):
    from training.train import train

    out = tmp_path_factory.mktemp("full")
    return train(tiny_config(dataset, out, cache_dir, validation_prompts=["jazz playlist"]))


def test_full_run_reports_and_writes_a_loadable_model(full_run, cache_dir):
    from models.registry import load_pipeline, resolve_model

    report = json.loads((full_run.out_dir / "training_report.json").read_text())
    assert report == json.loads(json.dumps(full_run.report))
    assert report["steps"] == 4 and np.isfinite(report["final_loss"])
    assert report["seconds_per_step"] > 0 and report["peak_process_rss_bytes"] > 0
    assert (full_run.out_dir / "samples" / "step-000004" / "1.png").is_file()

    spec = resolve_model(str(full_run.output))
    assert spec.path == full_run.output.resolve() and spec.native_size == 32
    image = generate(load_pipeline(spec, device="cpu", cache_dir=cache_dir))
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()


def test_ema_weights_differ_from_raw_and_are_saved(full_run, embedded_model_dir):
    import torch

    checkpoint = full_run.out_dir / "checkpoints" / "checkpoint-4"
    raw = unet_weights(checkpoint / "model.safetensors")
    saved = unet_weights(full_run.output / "unet" / "diffusion_pytorch_model.safetensors")
    base = unet_weights(embedded_model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    ema = torch.load(checkpoint / "custom_checkpoint_0.pkl", weights_only=False)
    from diffusers import UNet2DConditionModel

    # EMA's shadow list follows unet.parameters(); safetensors files sort their keys.
    names = [
        n
        for n, _ in UNet2DConditionModel.from_pretrained(
            full_run.output / "unet"
        ).named_parameters()
    ]
    assert len(ema["shadow_params"]) == len(names)
    for name, shadow in zip(names, ema["shadow_params"], strict=True):
        assert torch.equal(saved[name], shadow.float()), name
    changed = [n for n in names if not torch.equal(raw[n], saved[n])]
    assert len(changed) > len(names) // 2, "EMA weights should differ from the raw ones"
    assert any(not torch.equal(base[n], saved[n]) for n in names), "training changed nothing"


# -- LoRA, through the command line -----------------------------------------------------------


def lora_argv(dataset: Path, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        *("--preset", "seed001", "--method", "lora", "--lora-rank", "4", "--lora-alpha", "8"),
        *("--data", str(dataset), "--caption-column", "caption", "--base", "embedded"),
        *("--out", str(out), "--cache-dir", str(cache_dir), "--resolution", "32"),
        *("--train-batch-size", "2", "--gradient-accumulation-steps", "2", "--seed", "3"),
        *("--max-train-steps", "4", "--checkpointing-steps", "2", "--no-center-crop"),
        *("--noise-offset", "0.05", "--snr-gamma", "5"),
        *("--learning-rate", "0.05"),  # large, so a few steps visibly change the image
        *extra,
    ]


def lora_config(dataset: Path, out: Path, cache_dir: Path, *extra: str):
    """The config the command line makes of :func:`lora_argv`."""
    return config_from_preset(
        **vars(train_parser().parse_args(lora_argv(dataset, out, cache_dir, *extra)))
    )


@pytest.fixture(scope="module")
def lora_run(dataset, tmp_path_factory, cache_dir, embedded_model_dir):
    out = tmp_path_factory.mktemp("lora")
    assert main(lora_argv(dataset, out, cache_dir)) == 0
    return out


def test_lora_file_loads_changes_the_image_and_unloads(lora_run, cache_dir, capsys):
    from models.registry import load_pipeline, resolve_model

    lora = lora_run / "lora" / "pytorch_lora_weights.safetensors"
    assert lora.is_file()
    report = json.loads((lora_run / "training_report.json").read_text())
    assert report["method"] == "lora" and np.isfinite(report["final_loss"])
    # Checkpoints hold the adapters only, not the frozen base.
    checkpoint = lora_run / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "unet_lora.safetensors").is_file()
    assert not (checkpoint / "model.safetensors").exists()

    base = load_pipeline(resolve_model("embedded"), device="cpu", cache_dir=cache_dir)
    before = generate(base)
    fused = load_pipeline(
        resolve_model("embedded", lora=str(lora)), device="cpu", cache_dir=cache_dir
    )
    assert np.abs(generate(fused) - before).max() > 1e-3, "the LoRA should change the image"
    base.load_lora_weights(str(lora.parent))
    assert np.abs(generate(base) - before).max() > 1e-3
    base.unload_lora_weights()
    np.testing.assert_allclose(generate(base), before, atol=1e-6)


# -- resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resumed_run_ends_with_the_same_weights(
    method, request, dataset, tmp_path, cache_dir, embedded_model_dir
):
    """Stopped after 2 of 4 steps (mid-epoch), resumed from the checkpoint: the same weights
    as the module's uninterrupted run of the same config."""
    import torch

    from training.train import train

    parts = tmp_path / "parts"
    if method == "full":
        whole = request.getfixturevalue("full_run").output / "unet"
        train(tiny_config(dataset, parts, cache_dir, max_train_steps=2))
        resumed = train(tiny_config(dataset, parts, cache_dir, resume="latest"))
        name = "diffusion_pytorch_model.safetensors"
    else:
        whole = request.getfixturevalue("lora_run") / "lora"
        train(lora_config(dataset, parts, cache_dir, "--max-train-steps", "2"))
        resumed = train(lora_config(dataset, parts, cache_dir, "--resume", "latest"))
        name = "pytorch_lora_weights.safetensors"
    assert resumed.report["steps"] == 4 and resumed.report["steps_this_run"] == 2
    folder = resumed.output / "unet" if method == "full" else resumed.output.parent
    a, b = unet_weights(whole / name), unet_weights(folder / name)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- pieces -----------------------------------------------------------------------------------


def test_min_snr_weights_match_the_formula():
    import torch

    snr = torch.tensor([0.5, 5.0, 20.0])
    eps = min_snr_weights(snr, 5.0, "epsilon")
    torch.testing.assert_close(eps, torch.tensor([1.0, 1.0, 0.25]))
    v = min_snr_weights(snr, 5.0, "v_prediction")
    torch.testing.assert_close(v, torch.tensor([0.5 / 1.5, 5.0 / 6.0, 5.0 / 21.0]))
    with pytest.raises(ValueError, match="prediction_type"):
        min_snr_weights(snr, 5.0, "sample")


def test_min_snr_weights_are_finite_at_zero_terminal_snr():
    import torch

    snr = torch.tensor([0.0, 2.0])  # the last step of a zero-terminal-SNR schedule, and another
    for prediction_type in ("epsilon", "v_prediction"):
        weights = min_snr_weights(snr, 5.0, prediction_type)
        assert torch.isfinite(weights).all(), prediction_type
        assert weights[0] == 0


def test_seed001_preset_is_the_papers_parameter_set():
    config = config_from_preset("seed001", data="x")
    assert (config.use_ema, config.resolution, config.center_crop, config.random_flip) == (
        True,
        512,
        True,
        True,
    )
    assert (config.train_batch_size, config.gradient_accumulation_steps) == (4, 4)
    assert config.gradient_checkpointing and config.max_train_steps == 100
    assert (config.learning_rate, config.max_grad_norm, config.lr_scheduler) == (
        1e-5,
        1.0,
        "constant",
    )
    seed000 = config_from_preset("seed000")
    assert (seed000.resolution, seed000.train_batch_size, seed000.mixed_precision) == (
        256,
        1,
        "fp16",
    )
    assert seed000.use_ema and seed000.num_train_epochs == 1
    seed003 = config_from_preset("seed003")
    assert (seed003.resolution, seed003.train_batch_size, seed003.num_train_epochs) == (
        512,
        1,
        50,
    )


def test_command_line_overrides_only_what_is_given():
    args = vars(train_parser().parse_args(["--preset", "seed000", "--learning-rate", "1e-8"]))
    assert args == {"preset": "seed000", "learning_rate": 1e-8}
    args = vars(train_parser().parse_args(["--no-use-ema", "--validation-prompts", "a", "b"]))
    config = config_from_preset(args.pop("preset"), **args)
    assert config.use_ema is False and config.validation_prompts == ["a", "b"]
    assert config.resolution == PRESETS["seed001"]["resolution"]


def test_help_is_quick_and_lists_presets():
    code = (
        "import sys; from training.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "seed001" in done.stdout and "--snr-gamma" in done.stdout and "accelerate" in done.stdout
    # The presets' real values, next to every flag a preset sets, and seed 000's warning.
    assert "[seed001 1e-05, seed000 1e-10, seed003 1e-05]" in " ".join(done.stdout.split())
    assert "lr 1e-10 is a no-op" in done.stdout and "on†" in done.stdout


def test_seed000_learning_rate_leaves_float32_weights_unchanged():
    """AdamW's step is about lr in size; at 1e-10 that is below float32's spacing at almost
    every weight of the embedded UNet, so 100 steps change almost nothing (SEED000_WARNING)."""
    import torch

    from models.embedded import build_architecture

    def unchanged_share(lr: float) -> float:
        unet = build_architecture(seed=0).unet
        before = [p.detach().clone() for p in unet.parameters()]
        optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(0)
        for _ in range(100):
            for p in unet.parameters():
                p.grad = torch.randn(p.shape, generator=generator)
            optimizer.step()
        same = sum((a == p).sum().item() for a, p in zip(before, unet.parameters(), strict=True))
        return same / sum(a.numel() for a in before)

    assert unchanged_share(1e-10) > 0.9  # measured: 96.1%
    assert unchanged_share(1e-5) < 0.01


def test_a_learning_rate_that_cannot_move_the_weights_is_said_before_the_run():
    from models.embedded import build_architecture
    from training.accelerated import frozen_by_rounding

    params = list(build_architecture(seed=0).unet.parameters())
    warning = frozen_by_rounding(1e-10, 100, params)
    assert warning and "cannot move 9" in warning  # 9x% of the weights, as measured above
    assert "at most" in warning and "lr × steps / median |w|" in warning
    assert frozen_by_rounding(1e-5, 100, params) is None


@pytest.mark.slow
def test_a_run_at_seed000s_learning_rate_warns_once_at_the_start(
    dataset, tmp_path, cache_dir, embedded_model_dir, caplog
):
    from training.train import train

    config = tiny_config(dataset, tmp_path, cache_dir, learning_rate=1e-10, max_train_steps=1)
    with caplog.at_level("WARNING", logger="training"):
        train(config)
    said = [r.getMessage() for r in caplog.records if "cannot move" in r.getMessage()]
    assert len(said) == 1 and "learning rate 1e-10" in said[0]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"data": ""}, "--data"),
        ({"resolution": 30}, "--resolution"),
        ({"max_train_steps": 0}, "--max-train-steps"),
        ({"learning_rate": 0.0}, "--learning-rate"),
        ({"ema_decay": 1.5}, "--ema-decay"),
        ({"method": "lora", "train_text_encoder": True}, "--train-text-encoder"),
        ({"proportion_empty_prompts": 1.0}, "--proportion-empty-prompts"),
    ],
)
def test_bad_options_are_named(options, expected):
    from training.config import check_config

    with pytest.raises(TrainingError, match=expected):
        check_config(config_from_preset("seed001", **{"data": "d", **options}))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err and err.count("\n") == 1


def test_dataset_formats_and_their_errors(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path / "d" / "train", count=3)
    assert [e.caption for e in load_examples(tmp_path / "d", caption_column="caption")] == [
        f"mix {i} playlist cover image" for i in range(3)
    ]
    with pytest.raises(DatasetError, match=r"'text'.*--caption-column"):
        load_examples(folder)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(DatasetError, match="pip install datasets"):
        load_examples(tmp_path / "hf")
    with pytest.raises(DatasetError, match="neither"):
        load_examples(tmp_path)


def test_augmentation_and_order_are_fixed_by_seed_epoch_and_index():
    image = Image.fromarray((np.arange(60 * 40 * 3) % 251).astype("uint8").reshape(40, 60, 3))
    crops = [
        np.asarray(
            prepare_image(
                image, resolution=32, center_crop=False, flip=True, rng=sample_rng(1, e, 5)
            )
        )
        for e in (0, 0, 1, 2, 3)
    ]
    assert np.array_equal(crops[0], crops[1])
    assert any(not np.array_equal(crops[0], c) for c in crops[2:])
    sampler = EpochShuffle(10, seed=4)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and list(sampler) == first
    sampler.use_epoch(1)
    assert list(sampler) != first
