"""Train the embedded model's architecture from nothing: the VAE first, then the UNet and the
CLIP text encoder together. This makes the "pretrained base" of the miniature study.

Reads top to bottom: the typed config → data into memory → the architecture
(:func:`models.embedded.build_architecture`) → 1. the VAE → 2. every image's latent
distribution, once → 3. UNet + text encoder with caption dropout and EMA → 4. the saved
diffusers folder and a report.

Why not :func:`training.train.train`: that fine-tunes a UNet under a frozen VAE and text
encoder, the seeds' setting. From scratch, the VAE must exist before any latent does, and the
text encoder must learn its words together with the UNet. The models are small enough that one
process on a CPU is the whole story, so there is no Accelerator here; a GPU is used when present.

Determinism: every random draw comes from generators seeded by ``config.seed`` (weights, crops,
batches, noise, timesteps, caption dropout), so a rerun on the same machine ends with the same
weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.config import TrainingError
from training.objective import min_snr_weights, prediction_target, signal_to_noise

REPORT_FILE = "pretrain_report.json"


@dataclass
class PretrainConfig:
    """One from-scratch run. The defaults take about 15 minutes on 2 CPU cores."""

    data: str  # an image folder with metadata.jsonl (or one with train/metadata.jsonl)
    out: str  # the diffusers model lands in out/model
    resolution: int = 64  # px; images are used as they are, so they must already be this size
    seed: int = 0
    device: str = "auto"
    # The miniature study's model is the 64 px architecture whatever the embedded default ships
    # (models.embedded.VAE_BLOCKS): the study's numbers stay comparable across releases.
    architecture: int = 64
    # --- 1. the VAE: L1 + L2 reconstruction of random crops, a whisper of KL (as SD's VAE) ---
    vae_steps: int = 1500
    vae_batch_size: int = 32
    vae_crop: int = 32  # px; the VAE is convolutional, so crops teach it the whole image's job
    vae_learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    # --- 3. UNet + text encoder: the scheduler's target (v-prediction on a zero-terminal-SNR
    #     schedule, models.embedded.embedded_scheduler), plain MSE ---
    steps: int = 1200
    batch_size: int = 32
    learning_rate: float = 5e-4  # warm-up, then cosine decay to a tenth
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    # Min-SNR-γ weights (None: off). Off by default: they damp the high-noise steps in x₀ terms
    # to weight SNR, and those are where the prompt has to decide the picture's colours.
    snr_gamma: float | None = None
    proportion_empty_prompts: float = 0.1  # unconditional examples, for classifier-free guidance
    ema_decay: float = 0.999  # saved weights are the EMA's
    log_every: int = 50  # steps between progress lines


@dataclass(frozen=True)
class PretrainResult:
    model: Path
    report: dict[str, Any]


def check_config(config: PretrainConfig) -> None:
    for name in ("vae_steps", "vae_batch_size", "steps", "batch_size", "log_every"):
        if getattr(config, name) < 1:
            raise TrainingError(f"{name} must be at least 1, got {getattr(config, name)}.")
    if config.resolution % 8 or config.vae_crop % 8 or config.vae_crop > config.resolution:
        raise TrainingError(
            f"resolution ({config.resolution}) and vae_crop ({config.vae_crop}) must be "
            "multiples of 8 with vae_crop ≤ resolution."
        )
    if config.snr_gamma is not None and config.snr_gamma <= 0:
        raise TrainingError(f"snr_gamma must be positive (or None: off), got {config.snr_gamma}.")
    if not 0 <= config.proportion_empty_prompts < 1:
        raise TrainingError(
            f"proportion_empty_prompts must be in [0, 1), got {config.proportion_empty_prompts}."
        )


def pretrain(config: PretrainConfig, *, log: Callable[[str], None] = print) -> PretrainResult:
    """Run ``config`` to the end; see the module docstring."""
    check_config(config)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from models.embedded import build_architecture
    from models.registry import pick_device
    from training.data import load_examples, open_rgb, token_ids

    started = time.perf_counter()
    out = Path(config.out)
    device = torch.device(pick_device(config.device))
    rng = torch.Generator().manual_seed(config.seed)  # every draw below comes from here

    # 0. The data, all in memory: a few thousand 64 px images are a few tens of MB.
    examples = load_examples(config.data)
    pixels = np.stack([np.asarray(open_rgb(e.image)) for e in examples])  # (N, R, R, 3) uint8
    if pixels.shape[1:3] != (config.resolution, config.resolution):
        raise TrainingError(
            f"{config.data}: images are {pixels.shape[2]}x{pixels.shape[1]} px, the run expects "
            f"{config.resolution}x{config.resolution}."
        )
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (N, 3, R, R)
    captions = [e.caption for e in examples]
    log(f"data: {len(images)} images from {config.data}")

    pipe = build_architecture(seed=config.seed, native_size=config.architecture)
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    timings: dict[str, float] = {}

    # 1. The VAE on random crops (with flips): reconstruction plus a tiny KL term that keeps the
    #    latent distribution well-behaved without blurring (Rombach et al. 2022, §3 and app. G).
    vae.to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate)
    phase = time.perf_counter()
    for step in range(1, config.vae_steps + 1):
        batch = _random_crops(images, config.vae_batch_size, config.vae_crop, rng).to(device)
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=rng)).sample  # (B, 3, c, c)
        loss = (
            F.l1_loss(reconstruction, batch)
            + F.mse_loss(reconstruction, batch)
            + config.kl_weight * posterior.kl().mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _progress(log, "vae", step, config.vae_steps, loss.item(), phase, config.log_every)
    timings["vae_s"] = time.perf_counter() - phase

    # 2. Every image's latent distribution, once: the VAE is frozen from here on. The scaling
    #    factor makes the latents unit-variance, as 0.18215 does for SD's VAE.
    vae.eval().requires_grad_(False)
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(images), 256):
            dist = vae.encode(images[start : start + 256].to(device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
    latent_mean, latent_std = torch.cat(means), torch.cat(stds)  # (N, 4, R/4, R/4)
    scaling = 1.0 / latent_mean.std().item()
    vae.register_to_config(scaling_factor=scaling)
    reconstruction_error = _reconstruction_error(vae, images[:256].to(device))
    log(f"vae: scaling factor {scaling:.4f}, reconstruction MAE {reconstruction_error:.4f}")

    # 3. UNet and text encoder together, on the scheduler's prediction target; an empty caption
    #    for a share of the examples teaches the unconditional prediction guidance needs.
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    caption_ids = token_ids(tokenizer, captions)  # (N, 77)
    empty_ids = token_ids(tokenizer, [""])  # (1, 77)
    unet.to(device).train()
    text_encoder.to(device).train()
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _warmup_cosine(s, config.warmup_steps, config.steps)
    )
    ema = EMAModel(params, decay=config.ema_decay)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    phase = time.perf_counter()
    for step in range(1, config.steps + 1):
        index = torch.randint(0, len(images), (config.batch_size,), generator=rng)
        noise_like = torch.randn(latent_mean[index].shape, generator=rng)
        latents = (latent_mean[index] + latent_std[index] * noise_like) * scaling
        ids = caption_ids[index].clone()
        dropped = torch.rand(config.batch_size, generator=rng) < config.proportion_empty_prompts
        ids[dropped] = empty_ids
        noise = torch.randn(latents.shape, generator=rng)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (config.batch_size,), generator=rng
        )  # (B,)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        text = text_encoder(ids.to(device), return_dict=False)[0]  # (B, 77, D)
        prediction = unet(noisy.to(device), timesteps.to(device), text, return_dict=False)[0]
        target = prediction_target(noise_scheduler, latents, noise, timesteps)
        per_sample = F.mse_loss(prediction, target.to(device), reduction="none").mean(dim=(1, 2, 3))
        if config.snr_gamma is not None:
            snr = signal_to_noise(alphas_cumprod, timesteps)
            kind = noise_scheduler.config.prediction_type
            per_sample = per_sample * min_snr_weights(snr, config.snr_gamma, kind).to(device)
        loss = per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        ema.step(params)
        if not math.isfinite(loss.item()):
            raise TrainingError(f"The loss became {loss.item()} at step {step}; lower the LR.")
        _progress(log, "unet+text", step, config.steps, loss.item(), phase, config.log_every)
    timings["unet_text_s"] = time.perf_counter() - phase

    # 4. Save the EMA weights as an ordinary diffusers folder (float32), and what it cost.
    ema.copy_to(params)
    unet.eval()
    text_encoder.eval()
    pipe.to("cpu")
    model_dir = out / "model"
    pipe.save_pretrained(model_dir, safe_serialization=True)
    report = {
        "config": asdict(config),
        "images": len(images),
        "device": str(device),
        "vae_scaling_factor": scaling,
        "vae_reconstruction_mae": reconstruction_error,
        "final_loss": loss.item(),
        "seconds": {k: round(v, 1) for k, v in timings.items()}
        | {"total": round(time.perf_counter() - started, 1)},
        "parameters": {
            name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("unet", "vae", "text_encoder")
        },
        "model": str(model_dir),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return PretrainResult(model=model_dir, report=report)


def _random_crops(images: Any, count: int, crop: int, rng: Any) -> Any:
    """``count`` random ``crop``-px squares from random images, half of them mirrored."""
    import torch

    n, _, height, width = images.shape
    index = torch.randint(0, n, (count,), generator=rng).tolist()
    top = torch.randint(0, height - crop + 1, (count,), generator=rng).tolist()
    left = torch.randint(0, width - crop + 1, (count,), generator=rng).tolist()
    flip = (torch.rand(count, generator=rng) < 0.5).tolist()
    crops = []
    for i, y, x, f in zip(index, top, left, flip, strict=True):
        patch = images[i, :, y : y + crop, x : x + crop]  # (3, c, c)
        crops.append(patch.flip(-1) if f else patch)
    return torch.stack(crops)  # (B, 3, c, c)


def _reconstruction_error(vae: Any, images: Any) -> float:
    """Mean absolute error, in [-1, 1] pixel units, of decoding the posterior means."""
    import torch

    with torch.no_grad():
        decoded = vae.decode(vae.encode(images).latent_dist.mean).sample
    return (decoded.clamp(-1, 1) - images).abs().mean().item()


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The LR multiplier: linear warm-up to 1, then a cosine down to 0.1 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _progress(
    log: Callable[[str], None],
    phase: str,
    step: int,
    total: int,
    loss: float,
    started: float,
    every: int,
) -> None:
    if step % every and step != total:
        return
    elapsed = time.perf_counter() - started
    eta = elapsed / step * (total - step)
    log(
        f"{phase}: step {step}/{total}, loss {loss:.4f}, {elapsed / step:.2f} s/step, ~{eta / 60:.1f} min left"
    )
