"""Fine-tune a Stable Diffusion UNet on image/caption pairs: fully (optionally with EMA) or LoRA.

Reads top to bottom: the typed config with its defaults and the seeds' presets, then
:func:`train` in numbered steps – Accelerator → load and freeze → (LoRA) → data → prepare →
resume → the loop with ``accumulate``/``sync_gradients`` → main-process checkpoints, validation
and the final save. The defaults are those of diffusers' ``train_text_to_image.py``, the script
all three seed papers ran; a preset states what a paper did say.

Runs unchanged on one CPU, one GPU, or many GPUs/nodes under ``accelerate launch -m training``:
everything distributed goes through the :class:`accelerate.Accelerator`.

Determinism: the data order, crops and flips come from ``(seed, epoch, index)`` (see
:mod:`training.data`) and every micro-batch's noise, timesteps and latent samples from a
generator seeded by ``(seed, micro-batch, process)``. Nothing depends on global RNG state after
the model is built, so a run resumed from a checkpoint ends with the same weights as one that
was never interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
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


def _opt(help: str, **kwargs: Any) -> Any:
    """A config field whose ``help`` is both its comment here and its ``--help`` line."""
    return field(metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """Every knob of a run. Defaults: diffusers' ``train_text_to_image.py`` (what the seeds ran
    and left unsaid); :data:`PRESETS` hold what each seed paper set."""

    # --- what to train, on what, into where ---
    data: str = _opt(
        "dataset folder: image folder with metadata.jsonl, or a datasets folder", default=""
    )
    base: str = _opt(
        "base model: a registry preset (embedded, small-sd, sd15, ...) or a diffusers folder",
        default="embedded",
    )
    out: str = _opt(
        "output folder: model/ or lora/, checkpoints/, samples/, logs/, the report",
        default="runs/cover",
    )
    method: Method = _opt(  # noqa: RUF009  (_opt is dataclasses.field)
        "full: fine-tune every UNet weight; lora: train low-rank adapters on its attention",
        default="full",
    )
    train_text_encoder: bool = _opt(
        "full method: train the text encoder with the UNet (for words the base model never "
        "learned; the seeds kept it frozen)",
        default=False,
    )
    image_column: str | None = _opt(
        "image column (default: file_name in metadata.jsonl, image in a datasets folder)",
        default=None,
    )
    caption_column: str = _opt("caption column", default="text")
    split: str = _opt(
        "split read from a folder with train/ validation/ test/ or a DatasetDict", default="train"
    )
    # --- images ---
    resolution: int = _opt(
        "training resolution in px (square); images are resized, then cropped", default=512
    )
    center_crop: bool = _opt("crop the centre (otherwise a random crop)", default=False)
    random_flip: bool = _opt("flip half the images horizontally", default=False)
    # --- optimisation ---
    train_batch_size: int = _opt("images per device per micro-batch", default=16)
    gradient_accumulation_steps: int = _opt(
        "micro-batches summed into one optimizer step", default=1
    )
    max_train_steps: int | None = _opt(
        "optimizer steps; when unset, num_train_epochs decides", default=None
    )
    num_train_epochs: int = _opt(
        "passes over the data, used when max_train_steps is unset", default=100
    )
    learning_rate: float = _opt("AdamW learning rate (not scaled by batch size)", default=1e-4)
    lr_scheduler: str = _opt(
        "diffusers scheduler: constant, constant_with_warmup, linear, cosine, ...",
        default="constant",
    )
    lr_warmup_steps: int = _opt("warm-up steps (ignored by the constant scheduler)", default=500)
    max_grad_norm: float = _opt("gradient clipping norm (0: no clipping)", default=1.0)
    adam_beta1: float = _opt("AdamW beta1", default=0.9)
    adam_beta2: float = _opt("AdamW beta2", default=0.999)
    adam_weight_decay: float = _opt("AdamW weight decay", default=1e-2)
    adam_epsilon: float = _opt("AdamW epsilon", default=1e-8)
    use_8bit_adam: bool = _opt(
        "bitsandbytes' 8-bit AdamW (CUDA; pip install bitsandbytes)", default=False
    )
    # --- memory and speed ---
    mixed_precision: Precision = _opt(  # noqa: RUF009  (_opt is dataclasses.field)
        "no, fp16 or bf16 (fp16 needs a GPU; on a CPU it falls back to no)", default="no"
    )
    gradient_checkpointing: bool = _opt(
        "recompute activations in the backward pass: less memory, ~30%% slower", default=False
    )
    dataloader_num_workers: int = _opt(
        "data-loading worker processes (0: in the main process)", default=0
    )
    # --- the loss ---
    snr_gamma: float | None = _opt(
        "Min-SNR weighting gamma (5 is the paper's choice; unset: plain MSE)", default=None
    )
    proportion_empty_prompts: float = _opt(
        "share of captions replaced by the empty prompt, so guidance keeps an unconditional "
        "prediction to push against (0: off)",
        default=0.0,
    )
    noise_offset: float = _opt(
        "noise offset (0.05-0.1 helps very dark/bright images; 0: off)", default=0.0
    )
    # --- EMA ---
    use_ema: bool = _opt(
        "keep an exponential moving average of the trained weights and save it", default=False
    )
    ema_decay: float = _opt(
        "EMA's largest decay (warm-up: (1+n)/(10+n) until it reaches this)", default=0.9999
    )
    # --- LoRA ---
    lora_rank: int = _opt("LoRA rank r", default=4)
    lora_alpha: float | None = _opt(
        "LoRA alpha (scale alpha/r; default: equal to the rank)", default=None
    )
    lora_layers: Literal["attention", "cross-attention"] = _opt(
        "attention: q/k/v/out of every attention block (diffusers' LoRA recipe); cross-attention: only the text-conditioned ones",
        default="attention",
    )
    # --- validation, checkpoints, logs ---
    validation_prompts: list[str] = _opt(  # noqa: RUF009  (_opt is dataclasses.field)
        "prompts rendered every validation_steps and at the end", default_factory=list
    )
    validation_steps: int = _opt(
        "render the validation prompts every N steps (0: only at the end)", default=0
    )
    validation_inference_steps: int = _opt("denoising steps of a validation image", default=20)
    checkpointing_steps: int = _opt(
        "save a resumable checkpoint every N steps (0: never)", default=500
    )
    checkpoints_total_limit: int | None = _opt(
        "keep at most this many checkpoints (oldest deleted)", default=None
    )
    resume: str | None = _opt("'latest' or a checkpoint folder to continue from", default=None)
    report_to: Literal["none", "tensorboard"] = _opt(
        "tensorboard: log loss, lr and images under OUT/logs (pip install tensorboard)",
        default="none",
    )
    seed: int | None = _opt(
        "seed for the data order, augmentation, noise and LoRA init (default: random, recorded)",
        default=None,
    )
    cache_dir: str | None = _opt(
        "project cache (embedded model); default $COVER_CACHE_DIR or ~/.cache/playlist-cover",
        default=None,
    )
    allow_downloads: bool = _opt(
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


# -- pure maths --------------------------------------------------------------------------------


def min_snr_weights(snr: Any, gamma: float, prediction_type: str) -> Any:
    """Per-sample loss weights of Min-SNR-γ (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy", §3.4).

    With SNR(t) = ᾱ_t / (1 − ᾱ_t), the ε-prediction loss is weighted by min(SNR, γ) / SNR and the
    v-prediction loss by min(SNR, γ) / (SNR + 1); both equal the x₀-loss weight min(SNR, γ)
    rewritten for what the network predicts. High-noise steps (small SNR) keep weight ~1,
    nearly clean ones (large SNR) are damped to γ / SNR.
    """
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        # A zero-terminal-SNR schedule has SNR 0 at its last step, where ε is the input itself:
        # weight 0 there, not 0/0.
        return clipped / snr.clamp(min=1e-12)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    raise ValueError(
        f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}"
    )


def prediction_target(scheduler: Any, latents: Any, noise: Any, timesteps: Any) -> Any:
    """What the UNet learns to predict, as the scheduler's ``prediction_type`` says: the
    velocity αε − σx₀ for "v_prediction", the noise ε otherwise."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def signal_to_noise(alphas_cumprod: Any, timesteps: Any) -> Any:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t) for each timestep (Kingma et al. 2021, eq. 1)."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alpha_bar / (1 - alpha_bar)


def step_seed(seed: int, micro_step: int, process: int) -> int:
    """The seed of one micro-batch's noise on one process (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{micro_step}:{process}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # torch seeds are < 2**64; stay positive


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run put things, and its measured cost."""

    output: Path  # out/model (a diffusers folder) or out/lora/pytorch_lora_weights.safetensors
    report: dict[str, Any]
    out_dir: Path


def find_checkpoint(out: Path, resume: str) -> Path | None:
    """The checkpoint folder ``resume`` names: ``latest`` (None when there is none yet) or a
    path."""
    if resume == "latest":
        found = sorted(
            (p for p in (out / CHECKPOINTS).glob("checkpoint-*") if (p / TRAIN_STATE).is_file()),
            key=lambda p: int(p.name.rpartition("-")[2]),
        )
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if not (path / TRAIN_STATE).is_file():
        raise TrainingError(f"--resume {resume!r} is not a checkpoint folder (no {TRAIN_STATE}).")
    return path


# -- the run -----------------------------------------------------------------------------------


def train(config: TrainConfig) -> TrainResult:
    """Run ``config`` to the end and save the result; see the module docstring."""
    check_config(config)
    from models.registry import load_pipeline, resolve_model
    from training.data import CaptionedImages, EpochShuffle, collate, load_examples

    # 0. Cheap checks first: the data and the model name, before minutes of loading.
    examples = load_examples(
        config.data,
        image_column=config.image_column,
        caption_column=config.caption_column,
        split=config.split,
    )
    spec = resolve_model(config.base)
    if spec.kind != "sd":
        raise TrainingError(
            f"--base {config.base!r} is not a Stable Diffusion model; it can't be fine-tuned here."
        )
    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import (
        GradientAccumulationPlugin,
        ProjectConfiguration,
        broadcast_object_list,
        set_seed,
    )
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    out = Path(config.out).expanduser()
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    checkpoint = find_checkpoint(out, config.resume) if config.resume else None

    # 1. The Accelerator: devices, processes, mixed precision, accumulation, trackers.
    mixed_precision = config.mixed_precision
    if mixed_precision == "fp16" and not torch.cuda.is_available():
        # accelerate refuses fp16 without a GPU; the seeds' fp16 is a GPU memory saving anyway.
        log.warning("fp16 mixed precision needs a CUDA GPU; training in float32 instead.")
        mixed_precision = "no"
    if config.report_to == "tensorboard":
        _require("tensorboard", TENSORBOARD_HINT, "--report-to tensorboard")
    accelerator = Accelerator(
        # Without a GPU, processes started by `accelerate launch --multi_gpu` (torchrun) only
        # join one gloo group when told they are CPU processes; otherwise each trains alone
        # and saves over the others (measured: tests/training/test_hub_training.py).
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed_precision,
        # Steps are counted in micro-batches across epoch ends (no early sync at an epoch's last
        # batch), so "checkpoint-N" always means exactly N x accumulation micro-batches.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        log_with="tensorboard" if config.report_to == "tensorboard" else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    seed = config.seed
    if seed is None and checkpoint is not None:
        seed = json.loads((checkpoint / TRAIN_STATE).read_text())["seed"]
    if seed is None:  # one random seed for all processes, recorded in the report
        seed = [int.from_bytes(os.urandom(4), "big")]
        broadcast_object_list(seed)
        seed = seed[0]
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        mixed_precision, torch.float32
    )
    device = accelerator.device

    # 2. The base model through the registry (float32 on the CPU first: trained weights must be
    #    float32 whatever the model's inference dtype), then freeze what is not trained.
    pipe = load_pipeline(
        spec, device="cpu", cache_dir=cache_dir, allow_downloads=config.allow_downloads
    )
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    vae.requires_grad_(False)
    vae.to(device, dtype=weight_dtype)
    text_encoder.requires_grad_(config.train_text_encoder)
    # A trained text encoder keeps float32 weights, like the UNet.
    text_encoder.to(device, dtype=torch.float32 if config.train_text_encoder else weight_dtype)

    # 3. What trains: every UNet weight, or LoRA adapters on its attention projections.
    set_seed(seed)  # global RNG is used only from here to the adapters' init; see the docstring
    if config.method == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.to(device, dtype=weight_dtype)  # the frozen base may run in half precision
        targets: Any = list(LORA_TARGETS)
        if config.lora_layers == "cross-attention":  # attn2 is the text-conditioned block
            targets = r".*attn2\.(" + "|".join(re.escape(t) for t in LORA_TARGETS) + r")$"
        unet.add_adapter(
            LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha if config.lora_alpha is not None else config.lora_rank,
                init_lora_weights="gaussian",
                target_modules=targets,
            )
        )
        for param in unet.parameters():  # adapters train in float32 even when the base is half
            if param.requires_grad:
                param.data = param.data.float()
    else:
        unet.requires_grad_(True)
    unet.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.train_text_encoder:
        text_encoder.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    params += [p for p in text_encoder.parameters() if p.requires_grad]
    ema = EMAModel(params, decay=config.ema_decay) if config.use_ema else None
    if ema is not None:
        ema.to(device)

    if config.use_8bit_adam:
        bnb = _require("bitsandbytes", BNB_HINT, "--use-8bit-adam")
        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    optimizer = optimizer_class(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )

    # 4. Data: deterministic order and augmentation (training/data.py).
    dataset = CaptionedImages(
        examples,
        resolution=config.resolution,
        center_crop=config.center_crop,
        random_flip=config.random_flip,
        seed=seed,
    )
    sampler = EpochShuffle(len(dataset), seed)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.train_batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.dataloader_num_workers,
    )

    # 5. Prepare: accelerate shards the batches across processes and wraps the model.
    unet, optimizer, dataloader = accelerator.prepare(unet, optimizer, dataloader)
    if config.train_text_encoder:
        text_encoder = accelerator.prepare(text_encoder)
    batches_per_epoch = len(dataloader)  # per process, after sharding
    max_steps = config.max_train_steps or math.ceil(
        config.num_train_epochs * batches_per_epoch / config.gradient_accumulation_steps
    )
    # The prepared scheduler steps once per process per optimizer step (diffusers does the same).
    lr_scheduler = accelerator.prepare(
        get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=max_steps * accelerator.num_processes,
        )
    )
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if config.method == "lora":
        _checkpoint_only_lora(accelerator)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        settings = {**dataclasses.asdict(config), "seed": seed, "mixed_precision": mixed_precision}
        (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        if config.report_to == "tensorboard":
            accelerator.init_trackers("playlist-cover", config=_flat(settings))

    # 6. Resume: weights, optimizer, scheduler, EMA and the step count; the data position follows.
    global_step = 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        global_step = json.loads((checkpoint / TRAIN_STATE).read_text())["global_step"]
        accelerator.print(f"Resumed from {checkpoint} at step {global_step}.")
    elif config.resume:
        accelerator.print(f"No checkpoint in {out / CHECKPOINTS} yet; starting from step 0.")

    def encode_prompts(captions: list[str]) -> Any:
        ids = tokenizer(
            captions,
            max_length=tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)  # (B, 77)
        return text_encoder(ids, return_dict=False)[0]  # (B, 77, D)

    def checkpoint_now() -> None:
        folder = out / CHECKPOINTS / f"checkpoint-{global_step}"
        if accelerator.is_main_process and config.checkpoints_total_limit is not None:
            _prune_checkpoints(out / CHECKPOINTS, keep=config.checkpoints_total_limit - 1)
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            state = {"global_step": global_step, "seed": seed}
            (folder / TRAIN_STATE).write_text(json.dumps(state) + "\n", encoding="utf-8")

    def validate() -> None:
        if not config.validation_prompts or not accelerator.is_main_process:
            return
        images = _render(
            accelerator.unwrap_model(unet), vae, accelerator.unwrap_model(text_encoder),
            tokenizer, pipe.scheduler,
            prompts=config.validation_prompts, resolution=config.resolution,
            steps=config.validation_inference_steps, seed=seed, ema=ema, params=params,
            accelerator=accelerator,
        )  # fmt: skip
        folder = out / "samples" / f"step-{global_step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            image.save(folder / f"{index + 1}.png")
        if config.report_to == "tensorboard":
            stacked = np.stack([np.asarray(image) for image in images])  # (N, H, W, 3)
            writer = accelerator.get_tracker("tensorboard").writer
            writer.add_images("validation", stacked, global_step, dataformats="NHWC")

    # 7. The loop. One optimizer step = gradient_accumulation_steps micro-batches.
    micro_step = global_step * config.gradient_accumulation_steps
    epoch = micro_step // batches_per_epoch
    progress = tqdm(
        total=max_steps,
        initial=global_step,
        desc="steps",
        disable=not accelerator.is_local_main_process,
    )
    step_times: list[float] = []
    step_loss = 0.0
    last_loss = float("nan")
    step_started = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while global_step < max_steps:
        sampler.use_epoch(epoch)
        dataset.use_epoch(epoch)
        skip = micro_step - epoch * batches_per_epoch  # > 0 only in the epoch a resume lands in
        batches = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch in batches:
            with accelerator.accumulate(unet):
                generator = torch.Generator(device).manual_seed(
                    step_seed(seed, micro_step, accelerator.process_index)
                )
                with torch.no_grad():
                    pixels = batch["pixel_values"].to(device, dtype=weight_dtype)  # (B, 3, R, R)
                    latents = vae.encode(pixels).latent_dist.sample(generator=generator)
                    latents = latents * vae.config.scaling_factor  # (B, 4, R/8, R/8)
                    captions = batch["captions"]
                    if config.proportion_empty_prompts:
                        drop = torch.rand(len(captions), generator=generator, device=device)
                        captions = [
                            "" if d < config.proportion_empty_prompts else c
                            for c, d in zip(captions, drop.tolist(), strict=True)
                        ]
                with torch.set_grad_enabled(config.train_text_encoder):
                    text = encode_prompts(captions)  # (B, 77, D)
                noise = torch.randn(
                    latents.shape, generator=generator, device=device, dtype=latents.dtype
                )
                if config.noise_offset:
                    # Shifts each channel's mean so the model also learns to change overall
                    # brightness (Guttenberg 2023, "Diffusion with Offset Noise").
                    noise = noise + config.noise_offset * torch.randn(
                        (*latents.shape[:2], 1, 1), generator=generator, device=device,
                        dtype=latents.dtype,
                    )  # fmt: skip
                timesteps = torch.randint(
                    0,
                    noise_scheduler.config.num_train_timesteps,
                    (latents.shape[0],),
                    generator=generator,
                    device=device,
                )  # (B,)
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                target = prediction_target(noise_scheduler, latents, noise, timesteps)
                prediction = unet(noisy, timesteps, text, return_dict=False)[0]  # (B, 4, h, w)
                if config.snr_gamma is None:
                    loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
                else:
                    snr = signal_to_noise(noise_scheduler.alphas_cumprod, timesteps)
                    weights = min_snr_weights(
                        snr, config.snr_gamma, noise_scheduler.config.prediction_type
                    )
                    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none")
                    loss = (per_sample.mean(dim=(1, 2, 3)) * weights).mean()
                # The mean over all processes, for the log only (the backward uses our own loss).
                gathered = accelerator.gather(loss.detach().repeat(latents.shape[0]))
                step_loss += gathered.mean().item() / config.gradient_accumulation_steps
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            if not accelerator.sync_gradients:
                continue

            # 8. After each optimizer step: EMA, logs, and the main process's extra work.
            if ema is not None:
                ema.step(params)
            global_step += 1
            step_times.append(time.perf_counter() - step_started)
            last_loss, step_loss = step_loss, 0.0
            if not math.isfinite(last_loss):
                raise TrainingError(
                    f"The loss became {last_loss} at step {global_step}; lower --learning-rate "
                    "or use --mixed-precision bf16/no."
                )
            lr = lr_scheduler.get_last_lr()[0]
            progress.update(1)
            progress.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            accelerator.log({"train_loss": last_loss, "lr": lr}, step=global_step)
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0:
                checkpoint_now()
            if config.validation_steps and global_step % config.validation_steps == 0:
                validate()
            step_started = time.perf_counter()  # checkpoints and validation are not step time
            if global_step >= max_steps:
                break
        epoch += 1
    progress.close()

    # 9. Save what the bot loads: EMA weights when kept, as a diffusers folder or a LoRA file.
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.copy_to(params)  # from here on the model holds the EMA weights
    if config.validation_prompts and (
        not config.validation_steps or global_step % config.validation_steps
    ):
        validate()  # the final weights' images, unless the last step just rendered them
    output = out / ("lora" if config.method == "lora" else "model")
    if accelerator.is_main_process:
        if config.method == "lora":
            output = _save_lora(trained, output)
        else:
            trained_text = (
                accelerator.unwrap_model(text_encoder) if config.train_text_encoder else None
            )
            _save_full(trained, trained_text, spec, output, cache_dir, config)
    report = _report(
        config, accelerator, step_times, last_loss, global_step, output, seed, mixed_precision
    )
    if accelerator.is_main_process:
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    accelerator.end_training()
    return TrainResult(output=output, report=report, out_dir=out)


# -- helpers of train() ------------------------------------------------------------------------


def _require(module: str, hint: str, option: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrainingError(f"{option} needs the {module} package: {hint}") from None


def _flat(settings: dict[str, Any]) -> dict[str, Any]:
    """Tracker hyper-parameters: TensorBoard takes only numbers, strings and booleans."""
    return {
        k: v if isinstance(v, int | float | str | bool) else json.dumps(v)
        for k, v in settings.items()
    }


def _checkpoint_only_lora(accelerator: Any) -> None:
    """Make checkpoints hold the adapters only: the frozen base is already on disk elsewhere,
    and for SD 1.5 it would add 3.4 GB to every checkpoint."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    def save_hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
        for model in models:
            state = get_peft_model_state_dict(accelerator.unwrap_model(model))
            save_file({k: v.contiguous() for k, v in state.items()}, Path(output_dir) / LORA_STATE)
        weights.clear()  # nothing left for accelerate's own (full) model save

    def load_hook(models: list[Any], input_dir: str) -> None:
        while models:
            model = accelerator.unwrap_model(models.pop())
            set_peft_model_state_dict(model, load_file(Path(input_dir) / LORA_STATE))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _prune_checkpoints(folder: Path, *, keep: int) -> None:
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]))
    for old in found[: max(0, len(found) - keep)]:
        shutil.rmtree(old)


def _render(
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    scheduler: Any,
    *,
    prompts: list[str],
    resolution: int,
    steps: int,
    seed: int,
    ema: Any,
    params: list[Any],
    accelerator: Any,
) -> list[Any]:
    """The validation prompts through a pipeline made of the weights in training (the EMA weights
    when kept: those are what gets saved). Prompt *i* uses seed ``seed + i`` at every step, so
    successive renders show the training, not the noise."""
    import torch

    from models.embedded import assemble_pipeline

    pipeline = assemble_pipeline(unet, vae, text_encoder, tokenizer, scheduler)
    pipeline.set_progress_bar_config(disable=True)
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    unet.eval()
    try:
        images = []
        for index, prompt in enumerate(prompts):
            generator = torch.Generator(accelerator.device).manual_seed(seed + index)
            with torch.no_grad(), accelerator.autocast():
                result = pipeline(
                    prompt,
                    height=resolution,
                    width=resolution,
                    num_inference_steps=steps,
                    generator=generator,
                )
            images.append(result.images[0])
    finally:
        unet.train()
        if ema is not None:
            ema.restore(params)
    return images


def _save_lora(unet: Any, folder: Path) -> Path:
    """The adapters as ``folder/pytorch_lora_weights.safetensors`` (diffusers' LoRA format, with
    the rank/alpha metadata so ``load_lora_weights`` scales them right)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=state,
        safe_serialization=True,
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
    )
    return folder / "pytorch_lora_weights.safetensors"


def _save_full(
    unet: Any, text_encoder: Any, spec: Any, folder: Path, cache_dir: Path, config: TrainConfig
) -> None:
    """A complete diffusers folder: the base pipeline reloaded in float32 (the frozen parts may
    have run in half precision) with the trained UNet's weights, and the text encoder's when it
    was trained (``text_encoder`` not None)."""
    from models.registry import load_pipeline

    final = load_pipeline(
        spec, device="cpu", cache_dir=cache_dir, allow_downloads=config.allow_downloads
    )
    final.unet.load_state_dict({k: v.detach().float().cpu() for k, v in unet.state_dict().items()})
    if text_encoder is not None:
        final.text_encoder.load_state_dict(
            {k: v.detach().float().cpu() for k, v in text_encoder.state_dict().items()}
        )
    # The model now knows the size it was trained at; the bot generates at that size.
    latent_size = config.resolution // final.vae_scale_factor
    if final.unet.config.sample_size != latent_size:
        final.unet.register_to_config(sample_size=latent_size)
    final.save_pretrained(folder, safe_serialization=True)


def _report(
    config: TrainConfig,
    accelerator: Any,
    step_times: list[float],
    last_loss: float,
    global_step: int,
    output: Path,
    seed: int,
    mixed_precision: str,
) -> dict[str, Any]:
    """Seconds per step (the first step, with its warm-up, apart) and peak memory."""
    import resource

    import torch

    steady = step_times[1:] or step_times
    seconds_per_step = sum(steady) / len(steady) if steady else None
    images_per_step = (
        config.train_batch_size * config.gradient_accumulation_steps * accelerator.num_processes
    )
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )
    report: dict[str, Any] = {
        "method": config.method,
        "base": config.base,
        "steps": global_step,
        "steps_this_run": len(step_times),
        "seconds_per_step": seconds_per_step,
        "first_step_seconds": step_times[0] if step_times else None,
        "images_per_second": images_per_step / seconds_per_step if seconds_per_step else None,
        "images_per_step": images_per_step,
        "final_loss": last_loss,
        "peak_process_rss_bytes": rss,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated()
        if torch.cuda.is_available()
        else None,
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
        "mixed_precision": mixed_precision,
        "resolution": config.resolution,
        "seed": seed,
        "output": str(output),
    }
    return report
