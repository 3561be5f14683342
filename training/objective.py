"""The pure maths of a denoising step's loss: what the UNet is trained to predict, the signal
to noise ratio of a timestep, Min-SNR weights, and the seed of each micro-batch's randomness.
Shared by the fine-tunes (training/train.py) and Diffusion-DPO."""

from __future__ import annotations

import hashlib
from typing import Any


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
