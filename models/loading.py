"""Loading a resolved model (a :class:`~models.presets.ModelSpec`) onto a device: the embedded
model, the random-weight architectures, a local folder or a hub preset's snapshot in the local
Hugging Face cache (fetched through models/hub.py only when downloads are allowed), its LoRA
fused, and the preset's tiny decoder. diffusers, transformers and torch are imported here, when
a model is loaded, never at import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.devices import INSTALL_HINT, import_torch, torch_dtype
from models.embedded import (
    build_sd15_architecture,
    build_sd_turbo_architecture,
    build_tiny_decoder_architecture,
    ensure_embedded,
)
from models.errors import ModelUnavailable
from models.hub import fetch_command, hf_cache_dir, pull_repo
from models.presets import BUILT_IN, ModelSpec


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
    diffusers = _import_diffusers()
    dtype = torch_dtype(spec, device, half_precision=half_precision)
    # 1. Find the weights: the embedded model (built on demand), random SD 1.5 weights (built
    #    in memory, for benchmarks), a folder, or the hub cache.
    if spec.is_built_in_memory:
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
    torch = import_torch()
    half = dtype in (torch.float16, torch.bfloat16)
    snapshot = _hub_snapshot(  # 1.
        repo_id, allow_downloads=allow_downloads, variant=variant if half else None
    )
    index = _read_json(snapshot / "model_index.json") or {}
    components = [name for name, entry in index.items() if _is_component(entry)]
    missing = [name for name in components if name not in kwargs and not (snapshot / name).is_dir()]
    if missing:
        raise ModelUnavailable(
            f"The model {repo_id} in the local Hugging Face cache is incomplete (no "
            f"{', '.join(missing)}); fetch it again with {fetch_command(repo_id)}."
        )
    chosen = _pick_variant(
        snapshot, repo_id, [c for c in components if c not in kwargs], variant, half=half
    )  # 2.
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
            raise ModelUnavailable(
                f"The model {repo_id} is not in the local Hugging Face cache "
                f"({hf_cache_dir()}) and downloads are off; fetch it with "
                f"{fetch_command(repo_id)} on a machine with network, or set "
                "COVER_ALLOW_DOWNLOADS=true."
            ) from error
    return pull_repo(repo_id, variant=variant)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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
                f"SentencePiece model); run {INSTALL_HINT}."
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


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as error:
        raise ModelUnavailable(
            f"Generating images needs diffusers and transformers; run {INSTALL_HINT}."
        ) from error
    return diffusers
