"""What a run leaves behind: checkpoints (and resuming from them), validation renders, the
saved model or LoRA, and the report. Shared by the fine-tunes (training/train.py) and
Diffusion-DPO."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import CHECKPOINTS, LORA_STATE, TRAIN_STATE, TrainConfig, TrainingError

log = logging.getLogger(__name__)

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


# -- checkpoints, renders, saving, the report ---------------------------------------------------


def require(module: str, hint: str, option: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrainingError(f"{option} needs the {module} package: {hint}") from None


def flat_hyperparameters(settings: dict[str, Any]) -> dict[str, Any]:
    """Tracker hyper-parameters: TensorBoard takes only numbers, strings and booleans."""
    return {
        k: v if isinstance(v, int | float | str | bool) else json.dumps(v)
        for k, v in settings.items()
    }


def checkpoint_only_lora(accelerator: Any) -> None:
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


def prune_checkpoints(folder: Path, *, keep: int) -> None:
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]))
    for old in found[: max(0, len(found) - keep)]:
        shutil.rmtree(old)


def render_validation(
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


def save_lora(unet: Any, folder: Path) -> Path:
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


def save_full(
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


def build_report(
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


def resume_state(
    accelerator: Any, checkpoint: Path | None, *, resume: str | None, out: Path
) -> int:
    """Load ``checkpoint`` (weights, optimizer, scheduler, EMA) into the prepared objects and
    return its step; 0 when there is none to resume."""
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        step = json.loads((checkpoint / TRAIN_STATE).read_text())["global_step"]
        accelerator.print(f"Resumed from {checkpoint} at step {step}.")
        return int(step)
    if resume:
        accelerator.print(f"No checkpoint in {out / CHECKPOINTS} yet; starting from step 0.")
    return 0


def save_checkpoint(accelerator: Any, out: Path, *, step: int, seed: int, keep: int | None) -> Path:
    """``OUT/checkpoints/checkpoint-<step>`` with the accelerate state and the step and seed;
    with ``keep``, the oldest are pruned so that at most ``keep`` remain."""
    folder = out / CHECKPOINTS / f"checkpoint-{step}"
    if accelerator.is_main_process and keep is not None:
        prune_checkpoints(out / CHECKPOINTS, keep=keep - 1)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        state = {"global_step": step, "seed": seed}
        (folder / TRAIN_STATE).write_text(json.dumps(state) + "\n", encoding="utf-8")
    return folder


def save_samples(images: list[Any], out: Path, step: int) -> Path:
    """Validation renders as ``OUT/samples/step-<step>/<n>.png``."""
    folder = out / "samples" / f"step-{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        image.save(folder / f"{index + 1}.png")
    return folder
