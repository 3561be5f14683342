"""What the UNet's work costs in FLOPs, and a GPU's published peak to compare with."""

from __future__ import annotations

from typing import Any

from models.jobs import GenerationParams


def unet_flop_per_image(pipe: Any, params: GenerationParams) -> float:
    """FLOPs the UNet spends on one image: one forward pass at batch 1, counted by
    ``torch.utils.flop_counter``, times the steps, times 2 with classifier-free guidance
    (the conditional and unconditional passes). Attention and convolutions dominate; the
    scheduler's and the VAE's work is left out, so utilisation is slightly understated."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # count the eager module when compiled
    factor = getattr(pipe, "vae_scale_factor", 8)
    config = unet.config
    device, dtype = unet.device, unet.dtype
    latents = torch.zeros(
        1,
        config.in_channels,
        params.height // factor,
        params.width // factor,
        device=device,
        dtype=dtype,
    )  # (1, C, H/8, W/8)
    width = config.cross_attention_dim
    context = torch.zeros(1, 77, width, device=device, dtype=dtype)  # (1, tokens, width)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(latents, torch.tensor([500], device=device), encoder_hidden_states=context)
    per_pass = float(counter.get_total_flops())
    return per_pass * params.steps * (2 if params.guidance > 1 else 1)


# Dense bf16/fp16 tensor-core peaks (vendor figures, without sparsity), for "share of peak",
# most specific name first: torch names an H100 SXM "NVIDIA H100 80GB HBM3" but the PCIe card
# "NVIDIA H100 PCIe" and the NVL "NVIDIA H100 NVL", which have fewer SMs and lower clocks.
PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200 NVL": 835.0,
    "H100": 989.0,  # SXM
    "H200": 989.0,  # SXM
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
}


def peak_tflops(device: str) -> float | None:
    """The GPU's published half-precision peak: the first key of :data:`PEAK_TFLOPS` in the
    device's name (the table lists variants before their family)."""
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)
