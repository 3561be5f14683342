"""What a training run is asked to do: :class:`TrainConfig` with its defaults, the seeds'
presets, and the checks that refuse a run that cannot work (training/train.py runs it).

The defaults are those of diffusers' ``train_text_to_image.py``, the script all three seed
papers ran; a preset states what a paper did say (docs/facts.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
REPORT_FILE = "training_report.json"
LORA_STATE = "unet_lora.safetensors"  # a checkpoint's LoRA weights (the frozen base is not saved)
TRAIN_STATE = "training_state.json"  # a checkpoint's step and seed
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections of the UNet
BNB_HINT = "pip install bitsandbytes"
TENSORBOARD_HINT = "pip install tensorboard"

Method = Literal["full", "lora"]
Precision = Literal["no", "fp16", "bf16"]


class TrainingError(ValueError):
    """A run that cannot start as configured; ``str()`` is the one-line message for the user."""


def option(help: str, **kwargs: Any) -> Any:
    """A config field whose ``help`` is both its comment here and its ``--help`` line."""
    return field(metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """Every knob of a run. Defaults: diffusers' ``train_text_to_image.py`` (what the seeds ran
    and left unsaid); :data:`PRESETS` hold what each seed paper set."""

    # --- what to train, on what, into where ---
    data: str = option(
        "dataset folder: image folder with metadata.jsonl, or a datasets folder", default=""
    )
    base: str = option(
        "base model: a registry preset (embedded, small-sd, sd15, ...) or a diffusers folder",
        default="embedded",
    )
    out: str = option(
        "output folder: model/ or lora/, checkpoints/, samples/, logs/, the report",
        default="runs/cover",
    )
    method: Method = option(  # noqa: RUF009  (option is dataclasses.field)
        "full: fine-tune every UNet weight; lora: train low-rank adapters on its attention",
        default="full",
    )
    train_text_encoder: bool = option(
        "full method: train the text encoder with the UNet (for words the base model never "
        "learned; the seeds kept it frozen)",
        default=False,
    )
    image_column: str | None = option(
        "image column (default: file_name in metadata.jsonl, image in a datasets folder)",
        default=None,
    )
    caption_column: str = option("caption column", default="text")
    split: str = option(
        "split read from a folder with train/ validation/ test/ or a DatasetDict", default="train"
    )
    # --- images ---
    resolution: int = option(
        "training resolution in px (square); images are resized, then cropped", default=512
    )
    center_crop: bool = option("crop the centre (otherwise a random crop)", default=False)
    random_flip: bool = option("flip half the images horizontally", default=False)
    # --- optimisation ---
    train_batch_size: int = option("images per device per micro-batch", default=16)
    gradient_accumulation_steps: int = option(
        "micro-batches summed into one optimizer step", default=1
    )
    max_train_steps: int | None = option(
        "optimizer steps; when unset, num_train_epochs decides", default=None
    )
    num_train_epochs: int = option(
        "passes over the data, used when max_train_steps is unset", default=100
    )
    learning_rate: float = option("AdamW learning rate (not scaled by batch size)", default=1e-4)
    lr_scheduler: str = option(
        "diffusers scheduler: constant, constant_with_warmup, linear, cosine, ...",
        default="constant",
    )
    lr_warmup_steps: int = option("warm-up steps (ignored by the constant scheduler)", default=500)
    max_grad_norm: float = option("gradient clipping norm (0: no clipping)", default=1.0)
    adam_beta1: float = option("AdamW beta1", default=0.9)
    adam_beta2: float = option("AdamW beta2", default=0.999)
    adam_weight_decay: float = option("AdamW weight decay", default=1e-2)
    adam_epsilon: float = option("AdamW epsilon", default=1e-8)
    use_8bit_adam: bool = option(
        "bitsandbytes' 8-bit AdamW (CUDA; pip install bitsandbytes)", default=False
    )
    # --- memory and speed ---
    mixed_precision: Precision = option(  # noqa: RUF009  (option is dataclasses.field)
        "no, fp16 or bf16 (fp16 needs a GPU; on a CPU it falls back to no)", default="no"
    )
    gradient_checkpointing: bool = option(
        "recompute activations in the backward pass: less memory, ~30%% slower", default=False
    )
    dataloader_num_workers: int = option(
        "data-loading worker processes (0: in the main process)", default=0
    )
    # --- the loss ---
    snr_gamma: float | None = option(
        "Min-SNR weighting gamma (5 is the paper's choice; unset: plain MSE)", default=None
    )
    proportion_empty_prompts: float = option(
        "share of captions replaced by the empty prompt, so guidance keeps an unconditional "
        "prediction to push against (0: off)",
        default=0.0,
    )
    noise_offset: float = option(
        "noise offset (0.05-0.1 helps very dark/bright images; 0: off)", default=0.0
    )
    # --- EMA ---
    use_ema: bool = option(
        "keep an exponential moving average of the trained weights and save it", default=False
    )
    ema_decay: float = option(
        "EMA's largest decay (warm-up: (1+n)/(10+n) until it reaches this)", default=0.9999
    )
    # --- LoRA ---
    lora_rank: int = option("LoRA rank r", default=4)
    lora_alpha: float | None = option(
        "LoRA alpha (scale alpha/r; default: equal to the rank)", default=None
    )
    lora_layers: Literal["attention", "cross-attention"] = option(
        "attention: q/k/v/out of every attention block (diffusers' LoRA recipe); cross-attention: only the text-conditioned ones",
        default="attention",
    )
    # --- validation, checkpoints, logs ---
    validation_prompts: list[str] = option(  # noqa: RUF009  (option is dataclasses.field)
        "prompts rendered every validation_steps and at the end", default_factory=list
    )
    validation_steps: int = option(
        "render the validation prompts every N steps (0: only at the end)", default=0
    )
    validation_inference_steps: int = option("denoising steps of a validation image", default=20)
    checkpointing_steps: int = option(
        "save a resumable checkpoint every N steps (0: never)", default=500
    )
    checkpoints_total_limit: int | None = option(
        "keep at most this many checkpoints (oldest deleted)", default=None
    )
    resume: str | None = option("'latest' or a checkpoint folder to continue from", default=None)
    report_to: Literal["none", "tensorboard"] = option(
        "tensorboard: log loss, lr and images under OUT/logs (pip install tensorboard)",
        default="none",
    )
    seed: int | None = option(
        "seed for the data order, augmentation, noise and LoRA init (default: random, recorded)",
        default=None,
    )
    cache_dir: str | None = option(
        "project cache (embedded model); default $COVER_CACHE_DIR or ~/.cache/playlist-cover",
        default=None,
    )
    allow_downloads: bool = option(
        "let a hub base model be downloaded if it is not cached", default=False
    )


# What each seed paper set. Anything a paper left unsaid keeps the default above (their script's).
PRESETS: dict[str, dict[str, Any]] = {
    # Caffee et al., *Music Playlist Cover Generator*: small SD fine-tuned one epoch at 256 px,
    # batch 1, constant LR, no warm-up. The LR went 1e-5 (static) → 1e-8 (noisy) → 1e-10,
    # "which proved enough": the last is the preset, the others are one flag away. EMA and fp16
    # are inferred from diffusers' README command the paper followed, not stated by the paper.
    # SEED000_WARNING says why lr 1e-10 trains nothing (tests/training/test_train.py measures it).
    "seed000": {
        "resolution": 256,
        "train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": 1,
        "max_train_steps": None,
        "use_ema": True,
        "mixed_precision": "fp16",
        "lr_scheduler": "constant",
        "lr_warmup_steps": 0,
        "learning_rate": 1e-10,
    },
    # Šaulys & Slivinskas: one parameter set for the full fine-tune and for LoRA.
    "seed001": {
        "use_ema": True,
        "resolution": 512,
        "center_crop": True,
        "random_flip": True,
        "train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "gradient_checkpointing": True,
        "max_train_steps": 100,
        "learning_rate": 1e-5,
        "max_grad_norm": 1.0,
        "lr_scheduler": "constant",
    },
    # *Novel Paintings from the Latent Diffusion Model through Transfer Learning*: SD 1.5
    # retrained per artist, 512 px, batch 1, lr 1e-5, fp16/fp32 mixed precision, 50 epochs.
    "seed003": {
        "resolution": 512,
        "train_batch_size": 1,
        "learning_rate": 1e-5,
        "mixed_precision": "fp16",
        "num_train_epochs": 50,
        "max_train_steps": None,
    },
}
DEFAULT_PRESET = "seed001"
# (preset, option) pairs whose value is inferred, not stated by the paper.
INFERRED = frozenset({("seed000", "use_ema"), ("seed000", "mixed_precision")})

SEED000_WARNING = (
    "seed000's lr 1e-10 is a no-op: AdamW's step is about lr in size, far below float32's "
    "spacing at a weight's magnitude, so after 100 steps almost every weight is bit-for-bit "
    "unchanged (tests/training/test_train.py measures it; the issue's check on a UNet found 97%). "
    "The paper's 'fine-tuned' model was almost certainly its base. Its EMA and fp16 settings "
    "are inferred from diffusers' README command, not stated by the paper."
)


def config_from_preset(preset: str, **overrides: Any) -> TrainConfig:
    """The preset's config with ``overrides`` (field names) on top."""
    if preset not in PRESETS:
        raise TrainingError(f"Unknown preset {preset!r}; use one of {', '.join(PRESETS)}.")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TrainingError(f"Unknown training option(s): {', '.join(unknown)}.")
    return TrainConfig(**{**PRESETS[preset], **overrides})


def check_config(config: TrainConfig) -> None:
    """Raise :class:`TrainingError` naming the option and its value when a run cannot work."""
    if not config.data:
        raise TrainingError("--data is required: a dataset folder (see docs/training.md).")
    positive = ("resolution", "train_batch_size", "gradient_accumulation_steps", "lora_rank")
    for name in (*positive, "num_train_epochs", "validation_inference_steps"):
        if getattr(config, name) < 1:
            raise TrainingError(f"--{_flag(name)} must be at least 1, got {getattr(config, name)}.")
    if config.resolution % 8:
        raise TrainingError(
            f"--resolution must be a multiple of 8 (the VAE's scale), got {config.resolution}."
        )
    if config.max_train_steps is not None and config.max_train_steps < 1:
        raise TrainingError(f"--max-train-steps must be at least 1, got {config.max_train_steps}.")
    if config.learning_rate <= 0:
        raise TrainingError(f"--learning-rate must be positive, got {config.learning_rate}.")
    for name in ("validation_steps", "checkpointing_steps", "lr_warmup_steps", "noise_offset"):
        if getattr(config, name) < 0:
            raise TrainingError(f"--{_flag(name)} must be 0 or more, got {getattr(config, name)}.")
    if config.checkpoints_total_limit is not None and config.checkpoints_total_limit < 1:
        raise TrainingError(
            f"--checkpoints-total-limit must be at least 1, got {config.checkpoints_total_limit}."
        )
    if config.train_text_encoder and config.method == "lora":
        raise TrainingError(
            "--train-text-encoder works with --method full only (LoRA adapts the UNet)."
        )
    if not 0 <= config.proportion_empty_prompts < 1:
        raise TrainingError(
            f"--proportion-empty-prompts must be in [0, 1), got {config.proportion_empty_prompts}."
        )
    if config.snr_gamma is not None and config.snr_gamma <= 0:
        raise TrainingError(f"--snr-gamma must be positive, got {config.snr_gamma}.")
    if not 0 < config.ema_decay < 1:
        raise TrainingError(f"--ema-decay must be between 0 and 1, got {config.ema_decay}.")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def default_cache_dir() -> Path:
    """The project cache, as the bot's settings have it."""
    return Path(os.environ.get("COVER_CACHE_DIR") or "~/.cache/playlist-cover").expanduser()
