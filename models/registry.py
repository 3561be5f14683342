"""Which model a name means: a preset (models/presets.py), ``auto`` (the best preset this machine
has in its Hugging Face cache, models/hub.py) or a local diffusers folder, plus an optional LoRA.

:func:`resolve_model` turns a name into a :class:`ModelSpec` without touching torch, so the bot
and the CLI can validate options cheaply; models/loading.py does the heavy part.

Hub models are read from the local Hugging Face cache only, unless downloads are allowed
(``COVER_ALLOW_DOWNLOADS=true``): a bot must not stall on a multi-GB download in the middle of a
user's request.

This module is also the catalogue's one import for code outside ``models/`` (the bot, training,
eval, the tooling): it re-exports the presets, the devices and the loaders (``__all__``).
Inside ``models/`` each module imports from the layer that defines a name, in one direction:
presets → devices → hub → registry → loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.devices import cuda_available, local_devices, pick_device, torch_dtype
from models.errors import ModelUnavailable
from models.hub import hf_cache_dir, hf_home, repo_state
from models.loading import (
    load_hub_pipeline,
    load_pipeline,
    load_tiny_decoder,
    quiet_libraries,
    tiny_decoder_cached,
)
from models.presets import (
    AUTO,
    AUTO_PREFERENCE,
    AUTO_PREFERENCE_CPU,
    BUILT_IN,
    DEFAULT_MODEL,
    PRESETS,
    RANDOM_ARCHITECTURES,
    TAESD,
    Kind,
    ModelPreset,
    ModelSpec,
    list_models,
)

__all__ = [
    "AUTO",
    "AUTO_PREFERENCE",
    "AUTO_PREFERENCE_CPU",
    "BUILT_IN",
    "DEFAULT_MODEL",
    "PRESETS",
    "RANDOM_ARCHITECTURES",
    "TAESD",
    "Kind",
    "ModelPreset",
    "ModelSpec",
    "auto_choice",
    "hf_cache_dir",
    "hf_home",
    "list_models",
    "load_hub_pipeline",
    "load_pipeline",
    "load_tiny_decoder",
    "local_devices",
    "pick_device",
    "quiet_libraries",
    "resolve_auto",
    "resolve_model",
    "tiny_decoder_cached",
    "torch_dtype",
]

_LORA_FILE = "pytorch_lora_weights.safetensors"  # what save_lora_weights writes into a folder


def resolve_auto(*, gpu: bool | None = None) -> str:
    """The preset ``auto`` stands for (see :func:`auto_choice`)."""
    return auto_choice(gpu=gpu)[0]


def auto_choice(*, gpu: bool | None = None) -> tuple[str, str]:
    """What ``auto`` picks and why, in words for the person who asked: on a machine with a
    CUDA GPU (``gpu``; default: ask torch) the first model of :data:`AUTO_PREFERENCE` in the
    local hub cache; on a CPU a cached one-step model (:data:`AUTO_PREFERENCE_CPU`); otherwise
    the embedded model, which runs anywhere. A stand-in (random weights, modeltools/standins/)
    is never picked: it paints noise, and only someone who names it wants that."""
    if gpu is None:
        gpu = cuda_available()
    preference = AUTO_PREFERENCE if gpu else AUTO_PREFERENCE_CPU
    standins = []
    for name in preference:
        repo_id = PRESETS[name].repo_id
        state = repo_state(repo_id) if repo_id is not None else None
        if state is None or not state.cached:
            continue
        if state.standin:
            standins.append(name)
            continue
        if gpu:
            return name, f"a CUDA GPU and {name} in the local Hugging Face cache"
        return name, f"no CUDA GPU; {name} is cached and makes a cover in one step"
    wanted = ", ".join(preference)
    where = "a CUDA GPU but" if gpu else "no CUDA GPU and"
    skipped = (
        f"; skipped the stand-in{'s' * (len(standins) > 1)} {', '.join(standins)} "
        "(random weights: name it to use it)"
        if standins
        else ""
    )
    return "embedded", (
        f"{where} none of {wanted} in the local Hugging Face cache "
        f"(`python -m bot models pull {preference[0]}` fetches one){skipped}"
    )


def resolve_model(name: str, *, lora: str | None = None) -> ModelSpec:
    """Turn a preset name, ``auto`` (see :func:`resolve_auto`) or a local diffusers folder (plus
    an optional LoRA) into a spec.

    Raises :class:`ModelUnavailable` for an unknown name, a folder that is not a diffusers
    pipeline, or a LoRA path that is not a ``.safetensors`` file.
    """
    lora_path = _resolve_lora(lora) if lora else None
    auto_reason = None
    if name.strip().lower() == AUTO:
        name, auto_reason = auto_choice()
    preset = PRESETS.get(name.strip().lower())
    if preset is not None and preset.kind == "if" and lora_path is not None:
        raise ModelUnavailable(
            f"A LoRA cannot be applied to {preset.name}; use a Stable Diffusion model."
        )
    if preset is not None:
        return ModelSpec(
            name=name,
            kind=preset.kind,
            native_size=preset.native_size,
            steps=preset.steps,
            guidance=preset.guidance,
            dtype_cuda=preset.dtype_cuda,
            description=preset.description,
            repo_id=preset.repo_id,
            variant=preset.variant,
            stage2_repo_id=preset.stage2_repo_id,
            auto_reason=auto_reason,
            lora=lora_path,
            negative_prompts=preset.negative_prompts,
            tiny_decoder=preset.tiny_decoder,
        )
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _local_spec(name, folder.resolve(), lora_path)
    raise ModelUnavailable(
        f"Unknown model {name!r}; use one of {', '.join(list_models())} "
        "or the path of a local diffusers folder."
    )


def _local_spec(name: str, folder: Path, lora: Path | None) -> ModelSpec:
    """A spec for a local diffusers folder; its native size comes from its own configs."""
    if not (folder / "model_index.json").is_file():
        raise ModelUnavailable(
            f"The folder {str(folder)!r} is not a diffusers pipeline (it has no model_index.json)."
        )
    unet_config = _part_config(folder, "unet")
    vae_config = _part_config(folder, "vae")
    try:
        sample_size = unet_config.get("sample_size", 64)
        if isinstance(sample_size, list):  # some configs store (height, width)
            sample_size = sample_size[0]
        vae_scale = 2 ** (len(vae_config.get("block_out_channels", [0] * 4)) - 1)
        native_size = int(sample_size) * vae_scale
    except (TypeError, ValueError, IndexError) as error:
        raise ModelUnavailable(
            f"The folder {str(folder)!r} has a unet/ or vae/ config this loader can't read "
            f"(sample_size or block_out_channels: {error})."
        ) from None
    return ModelSpec(
        name=name,
        kind="sd",
        native_size=native_size,
        steps=25,
        guidance=7.5,
        dtype_cuda="float16",
        description=f"Local diffusers pipeline at {folder}.",
        path=folder,
        lora=lora,
    )


def _part_config(folder: Path, part: str) -> dict[str, Any]:
    """``part/config.json`` of a local pipeline folder, or a sentence saying what is wrong."""
    path = folder / part / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelUnavailable(
            f"The folder {str(folder)!r} has no {part}/config.json; only Stable Diffusion-style "
            "pipelines (with unet/ and vae/) can be loaded from a folder."
        ) from None
    except (OSError, ValueError) as error:
        raise ModelUnavailable(
            f"{part}/config.json in the folder {str(folder)!r} can't be read ({error})."
        ) from None
    if not isinstance(config, dict):
        raise ModelUnavailable(
            f"{part}/config.json in the folder {str(folder)!r} is not a JSON object."
        )
    return config


def _resolve_lora(lora: str) -> Path:
    """The LoRA weights file: a ``.safetensors`` file, or a folder holding save_lora_weights'."""
    path = Path(lora).expanduser()
    if path.is_dir() and (path / _LORA_FILE).is_file():
        return _check_lora(lora, (path / _LORA_FILE).resolve())
    if path.is_file() and path.suffix == ".safetensors":
        return _check_lora(lora, path.resolve())
    if not path.exists():
        raise ModelUnavailable(f"The LoRA file {lora!r} does not exist.")
    raise ModelUnavailable(
        f"The LoRA path {lora!r} must be a .safetensors file or a folder holding {_LORA_FILE}."
    )


def _check_lora(lora: str, path: Path) -> Path:
    """``path`` once its safetensors header reads and lists tensors: a garbage file is refused
    here, before a job is queued, rather than by the pipeline mid-job. Only the header is read
    (``safe_open`` maps the file; numpy, not torch, so this stays cheap)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            names = list(weights.keys())
    except (SafetensorError, OSError, ValueError) as error:
        reason = str(error)[:100]
        raise ModelUnavailable(
            f"The LoRA file {lora!r} is not a readable safetensors file ({reason})."
        ) from None
    if not names:
        raise ModelUnavailable(f"The LoRA file {lora!r} holds no weights.")
    return path
