"""The steps every accelerate-driven run shares, numbered as the fine-tunes
(training/train.py) and Diffusion-DPO/KTO (training/dpo.py) number them:

    0. :func:`resolve_sd`: the model name checked before anything loads;
    1. :func:`start_run`: the Accelerator, the run's seed and the frozen parts' dtype;
    2. :func:`load_base`: the base pipeline through the registry, the VAE (and the text encoder
       unless it trains) frozen on the device;
    3. :func:`make_trainable`: every UNet weight, or LoRA adapters (:func:`add_lora`) over a
       frozen base; :func:`make_optimizer` (AdamW);
    5. :func:`make_lr_scheduler` once accelerate has prepared the rest;
    8. :func:`run_loop`: the epochs, ``accumulate`` and ``sync_gradients``, clipping, the EMA,
       the logs, checkpoints and validation renders (:func:`validate`);
    9. :func:`save_trained` and :func:`write_report`.

What is each trainer's own stays in its numbered function, so each still reads top to bottom:
its data (4), its objective – the loss of one micro-batch, which it hands to the loop (7) – and
its report's extra figures (9)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from training.config import BNB_HINT, REPORT_FILE, TRAIN_STATE, TrainingError
from training.data import token_ids
from training.objective import step_seed
from training.outputs import (
    render_validation,
    require,
    save_checkpoint,
    save_full,
    save_lora,
    save_samples,
)

log = logging.getLogger(__name__)


class Settings(Protocol):
    """What the shared steps read of a run's config (TrainConfig and DPOConfig both have it)."""

    base: str
    method: str  # "lora" or "full"
    allow_downloads: bool
    resolution: int
    gradient_checkpointing: bool
    lora_rank: int
    lora_alpha: float | None
    lora_layers: str
    learning_rate: float
    adam_beta1: float
    adam_beta2: float
    adam_weight_decay: float
    adam_epsilon: float
    lr_scheduler: str
    lr_warmup_steps: int
    gradient_accumulation_steps: int
    max_grad_norm: float
    checkpointing_steps: int
    checkpoints_total_limit: int | None
    validation_prompts: list[str]
    validation_steps: int
    validation_inference_steps: int


# -- 1. the Accelerator ------------------------------------------------------------------------


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


# -- 0. and 2. the base model ------------------------------------------------------------------


def resolve_sd(base: str) -> Any:
    """The registry's spec for ``--base`` (a cheap look-up, before any loading);
    TrainingError when it is not a Stable Diffusion model."""
    from models.registry import resolve_model

    spec = resolve_model(base)
    if spec.kind != "sd":
        raise TrainingError(
            f"--base {base!r} is not a Stable Diffusion model; it can't be fine-tuned here."
        )
    return spec


@dataclass(frozen=True)
class Base:
    """The base pipeline's parts; the UNet is still float32 on the CPU, the rest on the device."""

    spec: Any  # the registry's ModelSpec, for saving a full model
    pipe: Any  # its scheduler renders the validation prompts
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any  # DDPM on the base's schedule: how the training noise is added


def load_base(
    spec: Any, run: RunStart, *, cache_dir: Path, allow_downloads: bool, train_text_encoder: bool
) -> Base:
    """The base model through the registry, float32 on the CPU first (trained weights must be
    float32 whatever the model's inference dtype); the VAE frozen on the device in the run's
    dtype, the text encoder too unless it trains (then it keeps float32 weights, like the UNet)."""
    import torch
    from diffusers import DDPMScheduler

    from models.registry import load_pipeline

    device = run.accelerator.device
    pipe = load_pipeline(spec, device="cpu", cache_dir=cache_dir, allow_downloads=allow_downloads)
    vae, text_encoder = pipe.vae, pipe.text_encoder
    vae.requires_grad_(False)
    vae.to(device, dtype=run.weight_dtype)
    text_encoder.requires_grad_(train_text_encoder)
    text_encoder.to(device, dtype=torch.float32 if train_text_encoder else run.weight_dtype)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return Base(spec, pipe, pipe.unet, vae, text_encoder, pipe.tokenizer, noise_scheduler)


def encode_prompts(base: Base, text_encoder: Any, captions: list[str], device: Any) -> Any:
    """(B, 77, D) text embeddings of ``captions`` (``text_encoder``: the base's, or the prepared
    one when it trains)."""
    ids = token_ids(base.tokenizer, captions).to(device)  # (B, 77)
    return text_encoder(ids, return_dict=False)[0]  # (B, 77, D)


# -- 3. what trains ----------------------------------------------------------------------------


def make_trainable(unet: Any, config: Settings, run: RunStart) -> None:
    """Every UNet weight (``--method full``), or LoRA adapters on its attention projections
    over a frozen base that may run in half precision (``--method lora``); training mode, and
    gradient checkpointing when asked. Global RNG is used only here, for the adapters' init."""
    from accelerate.utils import set_seed

    set_seed(run.seed)
    if config.method == "lora":
        unet.requires_grad_(False)
        unet.to(run.accelerator.device, dtype=run.weight_dtype)
        add_lora(unet, rank=config.lora_rank, alpha=config.lora_alpha, layers=config.lora_layers)
    else:
        unet.requires_grad_(True)
    unet.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()


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


def make_optimizer(params: list[Any], config: Settings, *, eight_bit: bool = False) -> Any:
    """AdamW over ``params``; bitsandbytes' 8-bit AdamW with ``eight_bit``."""
    import torch

    optimizer_class = torch.optim.AdamW
    if eight_bit:
        optimizer_class = require("bitsandbytes", BNB_HINT, "--use-8bit-adam").optim.AdamW8bit
    return optimizer_class(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )


# -- 5. prepare --------------------------------------------------------------------------------


def make_lr_scheduler(accelerator: Any, optimizer: Any, config: Settings, max_steps: int) -> Any:
    """The prepared learning-rate schedule. It steps once per process per optimizer step
    (diffusers does the same), hence the step counts times the processes."""
    from diffusers.optimization import get_scheduler

    return accelerator.prepare(
        get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=max_steps * accelerator.num_processes,
        )
    )


def write_settings(accelerator: Any, out: Path, settings: dict[str, Any]) -> None:
    """``OUT/config.json``: what the run was asked, with the seed and precision it ran at."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


# -- 8. the loop -------------------------------------------------------------------------------

# The loss of one micro-batch and the figures to average over an optimizer step beside it
# (DPO's share of pairs ranked right, say); the generator is seeded per micro-batch.
MicroBatchLoss = Callable[[dict[str, Any], Any], tuple[Any, dict[str, Any]]]


@dataclass
class LoopState:
    """Where the loop stands and what it measured; the trainers build their report from it."""

    step: int  # optimizer steps done, a resumed run's earlier ones included
    loss: float = float("nan")  # the last step's loss: the mean over processes and micro-batches
    metrics: dict[str, float] = field(default_factory=dict)  # the last step's other figures
    step_times: list[float] = field(default_factory=list)  # seconds, this run's steps only
    history: list[dict[str, float]] = field(default_factory=list)  # every step's loss and figures


def run_loop(
    run: RunStart,
    config: Settings,
    *,
    unet: Any,
    optimizer: Any,
    lr_scheduler: Any,
    dataloader: Any,
    sampler: Any,
    dataset: Any,
    params: list[Any],
    micro_batch_loss: MicroBatchLoss,
    validate: Callable[[int], None],
    out: Path,
    start_step: int,
    max_steps: int,
    ema: Any = None,
    description: str = "steps",
    loss_name: str = "loss",
    advice: str = "lower --learning-rate",
) -> LoopState:
    """Train from ``start_step`` to ``max_steps``. One optimizer step is
    ``gradient_accumulation_steps`` micro-batches; after each: the EMA, the logs, a checkpoint
    every ``checkpointing_steps`` and the validation renders every ``validation_steps``.

    The data order follows the epoch (``sampler`` and ``dataset``, the prepared ``dataloader``'s
    own, have ``use_epoch``: training/data.py) and a resumed run skips the batches its
    checkpoint had already seen, so it sees exactly the batches an uninterrupted run would.
    ``loss_name`` and ``advice`` word the error raised when the loss stops being finite."""
    import torch
    from tqdm.auto import tqdm

    accelerator, seed = run.accelerator, run.seed
    accumulation = config.gradient_accumulation_steps
    batches_per_epoch = len(dataloader)  # per process, after sharding
    state = LoopState(step=start_step)
    micro_step = start_step * accumulation
    epoch = micro_step // batches_per_epoch
    progress = tqdm(
        total=max_steps,
        initial=start_step,
        desc=description,
        disable=not accelerator.is_local_main_process,
    )
    step_loss, step_metrics = 0.0, {}
    step_started = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while state.step < max_steps:
        sampler.use_epoch(epoch)
        dataset.use_epoch(epoch)
        skip = micro_step - epoch * batches_per_epoch  # > 0 only in the epoch a resume lands in
        batches = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch in batches:
            with accelerator.accumulate(unet):
                generator = torch.Generator(accelerator.device).manual_seed(
                    step_seed(seed, micro_step, accelerator.process_index)
                )
                loss, metrics = micro_batch_loss(batch, generator)
                # The mean over all processes, for the log only (the backward uses our own loss).
                step_loss += accelerator.gather(loss.detach()).mean().item() / accumulation
                for name, value in metrics.items():
                    step_metrics[name] = step_metrics.get(name, 0.0) + float(value) / accumulation
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            if not accelerator.sync_gradients:
                continue

            # After each optimizer step: EMA, logs, and the main process's extra work.
            if ema is not None:
                ema.step(params)
            state.step += 1
            state.step_times.append(time.perf_counter() - step_started)
            state.loss, state.metrics, step_loss, step_metrics = step_loss, step_metrics, 0.0, {}
            state.history.append({"step": state.step, "loss": state.loss, **state.metrics})
            if not math.isfinite(state.loss):
                raise TrainingError(
                    f"The {loss_name} became {state.loss} at step {state.step}; {advice}."
                )
            lr = lr_scheduler.get_last_lr()[0]
            progress.update(1)
            figures = {name: f"{value:.2f}" for name, value in state.metrics.items()}
            progress.set_postfix(loss=f"{state.loss:.4f}", lr=f"{lr:.2e}", **figures)
            accelerator.log({"train_loss": state.loss, "lr": lr}, step=state.step)
            if config.checkpointing_steps and state.step % config.checkpointing_steps == 0:
                save_checkpoint(
                    accelerator,
                    out,
                    step=state.step,
                    seed=seed,
                    keep=config.checkpoints_total_limit,
                )
            if config.validation_steps and state.step % config.validation_steps == 0:
                validate(state.step)
            step_started = time.perf_counter()  # checkpoints and validation are not step time
            if state.step >= max_steps:
                break
        epoch += 1
    progress.close()
    return state


def rendered_at(step: int, config: Settings) -> bool:
    """Whether the loop's validation renders already ran at ``step`` (its last one, say)."""
    return bool(config.validation_steps) and step % config.validation_steps == 0


def validate(
    run: RunStart,
    base: Base,
    config: Settings,
    *,
    unet: Any,
    text_encoder: Any,
    params: list[Any],
    out: Path,
    step: int,
    ema: Any = None,
    tensorboard: bool = False,
) -> None:
    """On the main process: the validation prompts rendered with the weights in training (the
    EMA's when kept) into ``OUT/samples/step-N``, and to TensorBoard when the run logs there."""
    accelerator = run.accelerator
    if not config.validation_prompts or not accelerator.is_main_process:
        return
    images = render_validation(
        accelerator.unwrap_model(unet),
        base.vae,
        accelerator.unwrap_model(text_encoder),
        base.tokenizer,
        base.pipe.scheduler,
        prompts=config.validation_prompts,
        resolution=config.resolution,
        steps=config.validation_inference_steps,
        seed=run.seed,
        ema=ema,
        params=params,
        accelerator=accelerator,
    )
    save_samples(images, out, step)
    if tensorboard:
        import numpy as np

        stacked = np.stack([np.asarray(image) for image in images])  # (N, H, W, 3)
        writer = accelerator.get_tracker("tensorboard").writer
        writer.add_images("validation", stacked, step, dataformats="NHWC")


# -- 9. what a run leaves ----------------------------------------------------------------------


def save_trained(
    run: RunStart,
    base: Base,
    config: Settings,
    *,
    unet: Any,
    out: Path,
    cache_dir: Path,
    text_encoder: Any = None,
) -> Path:
    """What /cover loads, saved by the main process: ``OUT/lora/pytorch_lora_weights.safetensors``
    or the diffusers folder ``OUT/model`` (with ``text_encoder``'s weights when it trained)."""
    accelerator = run.accelerator
    output = out / ("lora" if config.method == "lora" else "model")
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(unet)
        if config.method == "lora":
            output = save_lora(trained, output)
        else:
            save_full(trained, text_encoder, base.spec, output, cache_dir, config)
    return output


def write_report(accelerator: Any, out: Path, report: dict[str, Any]) -> None:
    if accelerator.is_main_process:
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
