"""Which models exist, what they need, and how to load one onto a device.

A name is either a preset below or a local diffusers folder (one holding ``model_index.json``).
:func:`resolve_model` turns it into a :class:`ModelSpec` without touching torch, so the bot and the
CLI can validate options cheaply; :func:`load_pipeline` does the heavy part.

Hub models are read from the local Hugging Face cache only, unless downloads are allowed
(``COVER_ALLOW_DOWNLOADS=true``): a bot must not stall on a multi-GB download in the middle of a
user's request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.embedded import NATIVE_SIZE as EMBEDDED_NATIVE_SIZE
from models.errors import ModelUnavailable

Kind = Literal["sd", "if"]

_INSTALL_HINT = "pip install -e '.[gen]' in the project's checkout"
_LORA_FILE = "pytorch_lora_weights.safetensors"  # what save_lora_weights writes into a folder
_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class ModelPreset:
    """A model the project knows by name, with the settings it works best with."""

    name: str
    repo_id: str | None  # Hugging Face repo; None for the embedded model
    kind: Kind  # "sd": one diffusers text-to-image pipeline; "if": DeepFloyd's two stages
    native_size: int  # px, square; what the model was trained at
    steps: int
    guidance: float
    dtype_cuda: str  # "float16" | "bfloat16" | "float32": on CUDA (CPU always runs float32)
    description: str
    variant: str | None = None  # weights variant in the repo used on CUDA, e.g. "fp16"
    stage2_repo_id: str | None = None  # DeepFloyd IF's super-resolution stage
    # False for a model that never learned the words negative prompts use ("blurry, watermark,
    # ..."): guiding away from text it cannot read pushes in a random direction.
    negative_prompts: bool = True
    # The fast decoder for this preset's latents (diffusers' AutoencoderTiny): a hub repo, or
    # BUILT_IN for the random-weight presets; None where there is none (models/optimize.py's
    # ``decoder`` switch picks between it and the full VAE).
    tiny_decoder: str | None = None


TAESD = "madebyollin/taesd"  # TAESD decodes SD 1.x and 2.x latents (one shared VAE latent space)
BUILT_IN = "built in memory"
# Presets whose weights are made here with random values, real shapes (models/embedded.py).
RANDOM_ARCHITECTURES = ("sd15-random", "sd-turbo-random")


PRESETS: dict[str, ModelPreset] = {
    preset.name: preset
    for preset in (
        ModelPreset(
            name="embedded",
            repo_id=None,
            kind="sd",
            native_size=EMBEDDED_NATIVE_SIZE,
            steps=20,
            guidance=4.0,
            dtype_cuda="float32",
            description="Tiny built-in model trained here from scratch on synthetic covers "
            "(128 px, ~9 MB): runs offline anywhere; palette and layout, not real covers.",
            negative_prompts=False,
        ),
        ModelPreset(
            name="sd15-random",
            repo_id=None,
            kind="sd",
            native_size=512,
            steps=25,
            guidance=7.5,
            dtype_cuda="float16",
            description="SD 1.5's architecture, random weights, built in memory: for "
            "benchmarks without a download; makes noise.",
            tiny_decoder=BUILT_IN,
        ),
        ModelPreset(
            name="sd-turbo-random",
            repo_id=None,
            kind="sd",
            native_size=512,
            steps=1,
            guidance=0.0,
            dtype_cuda="float16",
            description="sd-turbo's architecture (SD 2.1's), random weights, built in memory: "
            "for CPU benchmarks at real size without a download; makes noise.",
            tiny_decoder=BUILT_IN,
        ),
        ModelPreset(
            name="small-sd",
            repo_id="OFA-Sys/small-stable-diffusion-v0",
            kind="sd",
            native_size=256,  # the resolution the playlist-cover paper generated and fine-tuned at
            steps=25,
            guidance=7.5,
            dtype_cuda="float16",
            description="Distilled Stable Diffusion (~1.1 GB); best FID in the paper once tuned.",
            tiny_decoder=TAESD,
        ),
        ModelPreset(
            name="sd15",
            repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            kind="sd",
            native_size=512,
            steps=25,
            guidance=7.5,
            dtype_cuda="float16",
            description="Stable Diffusion 1.5 at 512 px.",
            variant="fp16",
            tiny_decoder=TAESD,
        ),
        ModelPreset(
            name="sd-turbo",
            repo_id="stabilityai/sd-turbo",
            kind="sd",
            native_size=512,
            steps=1,  # distilled for 1-4 steps
            guidance=0.0,  # trained without classifier-free guidance
            dtype_cuda="float16",
            description="SD 2.1 distilled for 1-4 steps without guidance: fastest at 512 px.",
            variant="fp16",
            tiny_decoder=TAESD,
        ),
        ModelPreset(
            name="deepfloyd-if",
            repo_id="DeepFloyd/IF-I-XL-v1.0",
            kind="if",
            native_size=256,  # stage II output; stage I makes 64 px
            steps=25,
            guidance=7.0,
            dtype_cuda="float16",
            description="DeepFloyd IF stages I+II (gated weights), loaded one at a time.",
            variant="fp16",
            stage2_repo_id="DeepFloyd/IF-II-L-v1.0",
        ),
    )
}

AUTO = "auto"
# What "auto" picks on a machine with a CUDA GPU: the first of these in the local hub cache.
# Stable Diffusion 1.5 first (the seeds' base), then the smaller and the faster alternatives.
AUTO_PREFERENCE = ("sd15", "small-sd", "sd-turbo")
# On a CPU only a one-step model is practical at 512 px (docs/benchmarks/presets-cpu-*.md).
AUTO_PREFERENCE_CPU = ("sd-turbo",)
DEFAULT_MODEL = AUTO


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: what the user typed, the settings that apply, and where it lives."""

    name: str  # what the user typed: a preset name or a folder
    kind: Kind
    native_size: int
    steps: int
    guidance: float
    dtype_cuda: str
    description: str
    repo_id: str | None = None
    variant: str | None = None
    stage2_repo_id: str | None = None
    auto_reason: str | None = None  # why "auto" chose this model; None when named directly
    path: Path | None = None  # a local diffusers folder; None for hub presets and "embedded"
    lora: Path | None = None  # a LoRA .safetensors file applied on top
    negative_prompts: bool = True  # see ModelPreset
    tiny_decoder: str | None = None  # see ModelPreset

    @property
    def is_embedded(self) -> bool:
        return self.name == "embedded" and self.repo_id is None and self.path is None

    @property
    def is_built_in_memory(self) -> bool:
        """Weights made here, never loaded from anywhere (the real-shaped benchmark models)."""
        return self.name in RANDOM_ARCHITECTURES and self.repo_id is None and self.path is None


def list_models() -> list[str]:
    """``auto`` and the preset names (for option autocomplete)."""
    return [AUTO, *PRESETS]


def resolve_auto(*, gpu: bool | None = None) -> str:
    """The preset ``auto`` stands for (see :func:`auto_choice`)."""
    return auto_choice(gpu=gpu)[0]


def auto_choice(*, gpu: bool | None = None) -> tuple[str, str]:
    """What ``auto`` picks and why, in words for the person who asked: on a machine with a
    CUDA GPU (``gpu``; default: ask torch) the first model of :data:`AUTO_PREFERENCE` in the
    local hub cache; on a CPU a cached one-step model (:data:`AUTO_PREFERENCE_CPU`); otherwise
    the embedded model, which runs anywhere. A stand-in (random weights, models/standins.py)
    is never picked: it paints noise, and only someone who names it wants that."""
    from models.hub import repo_state

    if gpu is None:
        gpu = _cuda_available()
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


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def pick_device(requested: str = "auto") -> str:
    """The torch device to run on: ``auto`` picks cuda, then mps, then cpu.

    Explicit values ("cpu", "cuda", "cuda:N", "mps") are checked against this machine.
    """
    torch = _import_torch()
    value = requested.strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available(torch):
            return "mps"
        return "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available(torch):
            raise ModelUnavailable("The device 'mps' was asked for but this machine has no MPS.")
        return "mps"
    if value == "cuda" or value.startswith("cuda:"):
        index = value.partition(":")[2]
        if index and not index.isdigit():
            raise ModelUnavailable(f"The device {requested!r} is not valid; write cuda or cuda:N.")
        if not torch.cuda.is_available():
            raise ModelUnavailable(
                f"The device {requested!r} was asked for but torch sees no CUDA GPU here; "
                "use --device cpu, or auto to take a GPU only when there is one."
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ModelUnavailable(
                f"The device {requested!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
        return value
    raise ModelUnavailable(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.")


def local_devices(requested: str = "auto", *, cuda_only: bool = False) -> list[str]:
    """The devices of this machine the queue feeds, one worker each (``COVER_DEVICES``).

    ``auto``: every CUDA device (``cuda:0``, ``cuda:1``, …), else the one device
    :func:`pick_device` picks – or none with ``cuda_only`` (remote Ray workers carry the load,
    and a CPU would only take batches a GPU does many times faster). ``none``: no local device.
    Otherwise a comma-separated list, each checked by :func:`pick_device`; repeats are refused
    (two workers on one device would only fight over its memory).
    """
    value = requested.strip().lower()
    if value == "none":
        return []
    if value == "auto":
        torch = _import_torch()
        if torch.cuda.is_available():
            return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
        return [] if cuda_only else [pick_device("auto")]
    devices = [pick_device(item) for item in value.split(",") if item.strip()]
    devices = ["cuda:0" if device == "cuda" else device for device in devices]
    if not devices:
        raise ModelUnavailable(f"No device in {requested!r}; use auto, none or e.g. cuda:0,cuda:1.")
    if len(set(devices)) != len(devices):
        raise ModelUnavailable(f"A device appears twice in {requested!r}; name each once.")
    return devices


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def torch_dtype(spec: ModelSpec, device: str, *, half_precision: bool = True) -> Any:
    """Half precision on CUDA as the preset says, float32 elsewhere (never autocast: it makes
    black images and runs slower than loading the weights in half precision)."""
    torch = _import_torch()
    if half_precision and device.startswith("cuda") and spec.dtype_cuda in _DTYPES:
        return getattr(torch, spec.dtype_cuda)
    return torch.float32


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment says now (huggingface_hub reads it once, at
    import, so a changed HF_HOME would otherwise go unnoticed)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return hf_home() / "hub"


def hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface"


def load_pipeline(
    spec: ModelSpec,
    *,
    device: str,
    cache_dir: Path,
    allow_downloads: bool = False,
    lora_scale: float = 1.0,
    half_precision: bool = True,
) -> Any:
    """Load ``spec`` onto ``device`` (a value from :func:`pick_device`), its LoRA fused at
    ``lora_scale``, progress bars off. DeepFloyd IF has two pipelines: load those with
    :func:`load_hub_pipeline`. ``half_precision=False`` keeps CUDA weights in float32.

    ``cache_dir`` is the project's cache, where the embedded model is built on first use.
    """
    if spec.kind == "if":
        raise ValueError(
            "load_pipeline got a DeepFloyd IF spec; IF's stages are loaded one at a time."
        )
    from models.embedded import ensure_embedded

    diffusers = _import_diffusers()
    dtype = torch_dtype(spec, device, half_precision=half_precision)
    # 1. Find the weights: the embedded model (built on demand), random SD 1.5 weights (built
    #    in memory, for benchmarks), a folder, or the hub cache.
    if spec.is_built_in_memory:
        from models.embedded import build_sd15_architecture, build_sd_turbo_architecture

        build = (
            build_sd15_architecture if spec.name == "sd15-random" else build_sd_turbo_architecture
        )
        pipe = build(device=device).to(dtype=dtype)
    elif spec.is_embedded:
        pipe = diffusers.DiffusionPipeline.from_pretrained(
            ensure_embedded(cache_dir), dtype=dtype, local_files_only=True
        )
    elif spec.path is not None:
        try:
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                spec.path, dtype=dtype, local_files_only=True
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelUnavailable(_folder_failure(spec.path, error)) from error
    else:
        assert spec.repo_id is not None
        pipe = load_hub_pipeline(
            diffusers.DiffusionPipeline,
            spec.repo_id,
            dtype=dtype,
            variant=spec.variant,
            allow_downloads=allow_downloads,
        )
    # 2. LoRA on top, fused: the cache keys pipelines by (model, lora, scale), so the scale is
    #    fixed for this copy and fused weights run as fast as the base model.
    if spec.lora is not None:
        _apply_lora(pipe, spec.lora, scale=lora_scale)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_tiny_decoder(
    spec: ModelSpec, *, device: str, dtype: Any, allow_downloads: bool = False
) -> Any:
    """The preset's tiny autoencoder (diffusers' ``AutoencoderTiny``) on ``device``: built in
    memory for the random-weight presets, else from the local hub cache (fetched first when
    downloads are allowed).

    Raises :class:`ModelUnavailable` when ``spec`` has no tiny decoder, or its repository is
    not in the cache, naming the command that fetches it.
    """
    if spec.tiny_decoder is None:
        raise ModelUnavailable(
            f"The model {spec.name} has no tiny decoder; use decoder=full (or auto)."
        )
    diffusers = _import_diffusers()
    if spec.tiny_decoder == BUILT_IN:
        from models.embedded import build_tiny_decoder_architecture

        return build_tiny_decoder_architecture(device=device).to(dtype=dtype)
    repo_id = spec.tiny_decoder
    if not allow_downloads and not tiny_decoder_cached(repo_id):
        raise ModelUnavailable(
            f"The tiny decoder {repo_id} of {spec.name} is not in the local Hugging Face "
            f"cache; fetch it with `hf download {repo_id}` (a few MB), or use decoder=full."
        )
    try:
        tiny = diffusers.AutoencoderTiny.from_pretrained(
            repo_id,
            dtype=dtype,
            cache_dir=hf_cache_dir(),
            local_files_only=not allow_downloads,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelUnavailable(_load_failure(repo_id, error)) from error
    return tiny.to(device)


def tiny_decoder_cached(repo_id: str) -> bool:
    """Whether the hub cache holds ``repo_id``'s config and weights (a model repository, not
    a pipeline: both at the top level of its ``refs/main`` snapshot)."""
    repo = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return False
    snapshot = repo / "snapshots" / revision
    has_weights = any(
        (snapshot / f"diffusion_pytorch_model{suffix}").is_file() for suffix in _WEIGHT_SUFFIXES
    )
    return (snapshot / "config.json").is_file() and has_weights


def _apply_lora(pipe: Any, lora: Path, *, scale: float) -> None:
    """Load the LoRA file ``lora`` into ``pipe`` and fuse it at ``scale``."""
    try:
        pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="cover")
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelUnavailable(
            f"The LoRA file {str(lora)!r} does not fit this model "
            f"({type(error).__name__}: {error})."
        ) from error
    pipe.fuse_lora(lora_scale=scale, adapter_names=["cover"])
    pipe.unload_lora_weights()  # drops the adapter layers; the fused weights stay


def load_hub_pipeline(
    pipeline_class: Any,
    repo_id: str,
    *,
    dtype: Any,
    variant: str | None,
    allow_downloads: bool,
    **kwargs: Any,
) -> Any:
    """``pipeline_class.from_pretrained`` on ``repo_id``'s snapshot in the local hub cache
    (fetched first when downloads are allowed).

    Only a repository or file that is not there is reported as missing; anything else that
    goes wrong while loading is reported as what it is. Steps:

    1. find the snapshot (huggingface_hub resolves ``refs/main``), or say how to fetch it;
    2. pick the weight files the snapshot has: ``variant`` (e.g. fp16) when running in half
       precision and every component has it, else the full-precision files, else the variant
       upcast to ``dtype`` (a cache pulled for a GPU, used on a CPU);
    3. supply components that the installed libraries cannot build from the files as they are;
    4. load, local files only.
    """
    _import_diffusers()
    torch = _import_torch()
    half = dtype in (torch.float16, torch.bfloat16)
    snapshot = _hub_snapshot(  # 1.
        repo_id, allow_downloads=allow_downloads, variant=variant if half else None
    )
    index = _read_json(snapshot / "model_index.json") or {}
    components = [name for name, entry in index.items() if _is_component(entry)]
    missing = [name for name in components if name not in kwargs and not (snapshot / name).is_dir()]
    if missing:
        from models.hub import fetch_command

        raise ModelUnavailable(
            f"The model {repo_id} in the local Hugging Face cache is incomplete (no "
            f"{', '.join(missing)}); fetch it again with {fetch_command(repo_id)}."
        )
    chosen = _pick_variant(snapshot, repo_id, [c for c in components if c not in kwargs],
                           variant, half=half)  # fmt: skip  # 2.
    kwargs = {**_component_overrides(snapshot, index, dtype=dtype, variant=chosen), **kwargs}  # 3.
    if not any(snapshot.glob("*/*.safetensors")):
        # .bin weights only (small-sd): said here, diffusers takes them directly; left to guess,
        # it looks for safetensors first and logs an ERROR per component before falling back.
        kwargs.setdefault("use_safetensors", False)
    try:  # 4.
        return pipeline_class.from_pretrained(
            snapshot, dtype=dtype, variant=chosen, local_files_only=True, **kwargs
        )
    except (ImportError, OSError, ValueError, KeyError, RuntimeError, AttributeError) as error:
        raise ModelUnavailable(_load_failure(repo_id, error)) from error


def _hub_snapshot(repo_id: str, *, allow_downloads: bool, variant: str | None) -> Path:
    """The snapshot folder of ``repo_id`` in the local cache; fetched when allowed (only the
    files the pipeline needs, ``variant``'s weights where the repo has them)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=hf_cache_dir(), local_files_only=True))
    except LocalEntryNotFoundError as error:
        if not allow_downloads:
            from models.hub import fetch_command

            raise ModelUnavailable(
                f"The model {repo_id} is not in the local Hugging Face cache "
                f"({hf_cache_dir()}) and downloads are off; fetch it with "
                f"{fetch_command(repo_id)} on a machine with network, or set "
                "COVER_ALLOW_DOWNLOADS=true."
            ) from error
    from models.hub import pull_repo

    return pull_repo(repo_id, variant=variant)


def _is_component(entry: Any) -> bool:
    """A model_index.json entry naming a component (``["diffusers", "UNet2DConditionModel"]``);
    ``[null, null]`` marks an optional component the repo leaves out."""
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None


_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _weight_variants(folder: Path) -> set[str | None]:
    """The variants a component folder has weights for: ``None`` for the default files,
    ``"fp16"`` for ``*.fp16.safetensors`` and so on (also sharded ``*.fp16-00001-of-…``)."""
    found: set[str | None] = set()
    for path in folder.iterdir():
        if path.suffix not in _WEIGHT_SUFFIXES or path.name.endswith(".index.json"):
            continue
        parts = path.name[: -len(path.suffix)].split(".")
        found.add(parts[-1].split("-")[0] if len(parts) > 1 else None)
    return found


def _pick_variant(
    snapshot: Path, repo_id: str, components: list[str], variant: str | None, *, half: bool
) -> str | None:
    have = {
        name: variants
        for name in components
        if (variants := _weight_variants(snapshot / name))  # components with weights only
    }
    wanted = [variant, None] if variant and half else [None, variant] if variant else [None]
    for candidate in wanted:
        if all(candidate in variants for variants in have.values()):
            return candidate
    lacking = sorted(name for name, variants in have.items() if None not in variants)
    from models.hub import fetch_command

    raise ModelUnavailable(
        f"The model {repo_id} in the local Hugging Face cache has no complete set of weights "
        f"({', '.join(lacking)} lack the full-precision files and not every component has the "
        f"{variant or 'default'} ones); fetch it again with {fetch_command(repo_id)}."
    )


def _component_overrides(
    snapshot: Path, index: dict[str, Any], *, dtype: Any, variant: str | None
) -> dict[str, Any]:
    """Components to build ourselves because the installed libraries cannot load them from the
    files as they stand (each case says why)."""
    overrides: dict[str, Any] = {}
    if index.get("safety_checker") == ["deepfloyd_if", "IFSafetyChecker"]:
        # diffusers' IFSafetyChecker never calls post_init(), which transformers 5 needs to load
        # any weights (AttributeError 'all_tied_weights_keys'); the subclass calls it.
        overrides["safety_checker"] = _if_safety_checker_class().from_pretrained(
            snapshot / "safety_checker", dtype=dtype, variant=variant
        )
    return overrides


def _if_safety_checker_class() -> Any:
    from diffusers.pipelines.deepfloyd_if.safety_checker import IFSafetyChecker

    class LoadableIFSafetyChecker(IFSafetyChecker):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.post_init()

    return LoadableIFSafetyChecker


def _load_failure(repo_id: str, error: BaseException) -> str:
    """One sentence saying why a cached model did not load."""
    text = str(error)
    for package in ("sentencepiece", "protobuf"):
        if package in text.lower():
            return (
                f"Loading {repo_id} needs the {package} package (its tokenizer is a "
                f"SentencePiece model); run {_INSTALL_HINT}."
            )
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return (
        f"The model {repo_id} is in the local Hugging Face cache but could not be loaded "
        f"({type(error).__name__}: {first_line[:300]})."
    )


def _folder_failure(folder: Path, error: BaseException) -> str:
    """One sentence saying why a local model folder did not load, naming the folder but not
    where it lives (people on Discord may read it; the full error is in the log)."""
    text = str(error).replace(str(folder), folder.name).strip()
    first_line = text.splitlines()[0][:300] if text else ""
    return (
        f"The model folder {folder.name!r} is not a complete diffusers pipeline "
        f"({type(error).__name__}: {first_line}); check its model_index.json, configs and "
        "weights."
    )


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' loading bars and notices (the CLI and the bot report
    progress themselves; a warning that matters reaches our own log as an error)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.set_verbosity_error()


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise ModelUnavailable(f"Generating images needs torch; run {_INSTALL_HINT}.") from error
    return torch


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as error:
        raise ModelUnavailable(
            f"Generating images needs diffusers and transformers; run {_INSTALL_HINT}."
        ) from error
    return diffusers
