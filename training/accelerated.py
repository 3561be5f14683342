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
