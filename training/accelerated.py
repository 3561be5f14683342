"""The start of every training run: the Accelerator, the run's seed and the weights' dtype,
shared by the fine-tunes (training/train.py) and Diffusion-DPO (training/dpo.py)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TRAIN_STATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStart:
    accelerator: Any
    seed: int
    weight_dtype: Any  # what frozen parts are cast to: float16/bfloat16 under mixed precision
    mixed_precision: str  # as run: fp16 falls back to "no" without a GPU


def start_run(
    *,
    out: Path,
    mixed_precision: str,
    accumulation_steps: int,
    seed: int | None,
    checkpoint: Path | None,
    tensorboard: bool = False,
) -> RunStart:
    """The Accelerator (devices, processes, mixed precision, accumulation, trackers) and the
    seed: the configured one, else the checkpoint's, else one random seed for all processes."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import (
        GradientAccumulationPlugin,
        ProjectConfiguration,
        broadcast_object_list,
    )

    if mixed_precision == "fp16" and not torch.cuda.is_available():
        # accelerate refuses fp16 without a GPU; the seeds' fp16 is a GPU memory saving anyway.
        log.warning("fp16 mixed precision needs a CUDA GPU; training in float32 instead.")
        mixed_precision = "no"
    accelerator = Accelerator(
        # Without a GPU, processes started by `accelerate launch --multi_gpu` (torchrun) only
        # join one gloo group when told they are CPU processes; otherwise each trains alone
        # and saves over the others (measured: tests/training/test_hub_training.py).
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed_precision,
        # Steps are counted in micro-batches across epoch ends (no early sync at an epoch's last
        # batch), so "checkpoint-N" always means exactly N x accumulation micro-batches.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=accumulation_steps, sync_with_dataloader=False
        ),
        log_with="tensorboard" if tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    if seed is None and checkpoint is not None:
        seed = json.loads((checkpoint / TRAIN_STATE).read_text())["seed"]
    if seed is None:  # one random seed for all processes, recorded in the report
        shared = [int.from_bytes(os.urandom(4), "big")]
        broadcast_object_list(shared)
        seed = shared[0]
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        mixed_precision, torch.float32
    )
    return RunStart(accelerator, int(seed), weight_dtype, mixed_precision)


def add_lora(unet: Any, *, rank: int, alpha: float | None, layers: str) -> None:
    """LoRA adapters on the UNet's attention projections (``layers="cross-attention"``: the
    text-conditioned attn2 blocks only), trained in float32 even when the base is half."""
    import re

    from peft import LoraConfig

    from training.config import LORA_TARGETS

    targets: Any = list(LORA_TARGETS)
    if layers == "cross-attention":  # attn2 is the text-conditioned block
        targets = r".*attn2\.(" + "|".join(re.escape(t) for t in LORA_TARGETS) + r")$"
    unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=alpha if alpha is not None else rank,
            init_lora_weights="gaussian",
            target_modules=targets,
        )
    )
    for param in unet.parameters():
        if param.requires_grad:
            param.data = param.data.float()


# Half of float32's relative spacing: an update smaller than |w|·2⁻²⁴ rounds back to w.
_FLOAT32_HALF_SPACING = 2.0**-24


def frozen_by_rounding(learning_rate: float, steps: int, params: list[Any]) -> str | None:
    """A warning when ``learning_rate`` cannot move most of ``params`` at all, else None.

    AdamW's step is about ``lr`` in size whatever the gradient (its update is m̂/√v̂ ≈ ±1 times
    lr), so a weight w moves only if lr > |w|·2⁻²⁴; below that each step rounds back to w and
    no number of steps adds up. seed000's lr 1e-10 is such a case (config.SEED000_WARNING;
    tests/training/test_train.py measures 96% of the embedded UNet unchanged after 100 steps).
    The message gives the share of weights that cannot move and the relative change the run
    could make at most, lr × steps / median |w|, had the steps not rounded away."""
    import torch

    magnitudes = torch.cat([p.detach().abs().flatten().float().cpu() for p in params])
    if magnitudes.numel() == 0:
        return None
    stuck = float((magnitudes * _FLOAT32_HALF_SPACING > learning_rate).float().mean())
    if stuck < 0.5:
        return None
    median = float(magnitudes.median())
    most = learning_rate * steps / median if median > 0 else float("inf")
    return (
        f"learning rate {learning_rate:g} cannot move {stuck:.0%} of the trained weights: each "
        f"step is below float32's spacing at their size and rounds away, so the result will "
        f"be (almost) the base model. Even added up, {steps} steps could change a weight by at "
        f"most {most:.1e} of its size (lr × steps / median |w|)."
    )
