"""The Hugging Face cache side of the hub presets: what is cached, what a pipeline needs, and
fetching exactly that (``python -m bot models`` and ``models pull``; see bot/__main__.py).

Everything goes through ``huggingface_hub``: ``HfApi.model_info`` for a repository's file list,
``snapshot_download(allow_patterns=...)`` for the download (its progress bar, its resume of
``.incomplete`` files), ``scan_cache_dir`` for what is on disk. The cache folder is
:func:`models.registry.hf_cache_dir` (huggingface_hub reads HF_HOME once, at import).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ModelUnavailable
from models.registry import PRESETS, hf_cache_dir

# Config files a component folder may carry; anything else that is not weights is left out.
_CONFIGS = frozenset(
    {
        "config.json",
        "scheduler_config.json",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "tokenizer.json",
        "added_tokens.json",
        "generation_config.json",
    }
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# The runner loads IF's stage II with text_encoder=None (models/runner.py, _run_if): its T5
# weights (the same XXL encoder as stage I) would be gigabytes fetched for nothing.
_SKIP_COMPONENTS = {"DeepFloyd/IF-II-L-v1.0": frozenset({"text_encoder"})}
_LICENCE = "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0"


def repo_ids(name: str) -> list[str]:
    from models.support import SUPPORT_MODELS

    if name in SUPPORT_MODELS:  # the captioner, CLIP, the prompt expander (models/support.py)
        return [SUPPORT_MODELS[name].repo_id]
    preset = PRESETS.get(name)
    if preset is None:
        raise ModelUnavailable(
            f"Unknown model {name!r}; use one of {', '.join([*PRESETS, *SUPPORT_MODELS])}."
        )
    return [r for r in (preset.repo_id, preset.stage2_repo_id) if r]


def fetch_command(repo_id: str) -> str:
    """How a user fetches ``repo_id``, for an error: `models pull` with the name it takes (the
    preset or support model the repo belongs to, :func:`repo_ids`), and `hf download`, which
    works for any repo."""
    from models.support import SUPPORT_MODELS

    name = next((n for n in (*PRESETS, *SUPPORT_MODELS) if repo_id in repo_ids(n)), None)
    hf = f"`hf download {repo_id}`"
    return f"`python -m bot models pull {name}` or {hf}" if name else hf


def needed_files(repo_id: str, files: list[str], model_index: dict[str, Any], *,
                 variant: str | None) -> list[str]:  # fmt: skip
    """The files of ``files`` (a repository's paths) that the pipeline needs: model_index.json,
    each component's configs, and one weights format per component – safetensors, ``.bin``
    only where a component has no safetensors; the ``variant`` files where the component has
    them (full precision otherwise). Top-level checkpoints, README and images are left out."""
    skip = _SKIP_COMPONENTS.get(repo_id, frozenset())
    components = [
        key
        for key, value in model_index.items()
        if not key.startswith("_")
        and isinstance(value, list)
        and value[0] is not None
        and key not in skip
    ]
    chosen = ["model_index.json"]
    for component in components:
        inside = [f for f in files if f.startswith(component + "/") and f.count("/") == 1]
        chosen += sorted(f for f in inside if f.split("/")[1] in _CONFIGS and not _format_of(f))
        weights = [f for f in inside if _format_of(f)]
        chosen += _pick_weights(weights, variant)
    return chosen


# A transformers repository (no model_index.json) keeps everything at its top level; its weights
# are model.safetensors / pytorch_model.bin or their shards. Other files named *.bin
# (training_args.bin) and other frameworks' weights (tf_model.h5, flax_model.msgpack) are left out.
_TRANSFORMERS_EXTRA = frozenset({"vocab.txt", "processor_config.json"})
# A diffusers model repository (madebyollin/taesd, the tiny decoder) has the same shape, with
# diffusion_pytorch_model.* weights.
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "model-", "pytorch_model.bin", "pytorch_model-",
                         "diffusion_pytorch_model.")  # fmt: skip


def needed_transformers_files(files: list[str]) -> list[str]:
    """The files of a transformers repository (``files``: its paths) that loading the model,
    its tokenizer and its processor needs: the top-level configs and tokenizer files, and one
    weights format – safetensors where the repository has it, ``.bin`` otherwise."""
    top = [f for f in files if "/" not in f]
    chosen = sorted(f for f in top if f in _CONFIGS or f in _TRANSFORMERS_EXTRA)
    weights = [f for f in top if f.startswith(_TRANSFORMERS_WEIGHTS) and _format_of(f)]
    return chosen + _pick_weights(weights, None)


def _is_variant(path: str, variant: str) -> bool:
    # diffusers/transformers name variant files NAME.VARIANT.EXT, shards NAME.VARIANT-0001-of-….EXT
    # and their index NAME.EXT.index.VARIANT.json (e.g. IF's sharded T5 encoder)
    name = path.rsplit("/", 1)[-1]
    return f".{variant}." in name or f".{variant}-" in name


def _format_of(path: str) -> str | None:
    """``.safetensors`` or ``.bin`` for a weights file or a shard index, else None."""
    name = path.rsplit("/", 1)[-1]
    for suffix in _WEIGHT_SUFFIXES:
        if name.endswith(suffix) or (suffix + ".index.") in name:
            return suffix
    return None


def _pick_weights(weights: list[str], variant: str | None) -> list[str]:
    for suffix in _WEIGHT_SUFFIXES:  # safetensors first
        of_format = [w for w in weights if _format_of(w) == suffix]
        if not of_format:
            continue
        plain = [w for w in of_format if not any(_is_variant(w, v) for v in ("fp16", "bf16"))]
        if variant:
            chosen = [w for w in of_format if _is_variant(w, variant)]
            if chosen:
                return sorted(chosen)
        return sorted(plain)
    return []


def choose_variant(name: str, *, variant: str | None = "auto", device: str = "auto") -> str | None:
    """``auto``: the preset's variant (fp16) when the download is for CUDA (``device`` cuda, or
    auto on a machine where torch sees a GPU), full precision otherwise; ``none``: full."""
    if variant not in (None, "auto"):
        return None if variant == "none" else variant
    preset = PRESETS[name]
    if preset.variant is None:
        return None
    if device == "auto":
        from models.registry import _cuda_available

        cuda = _cuda_available()
    else:
        cuda = device.startswith("cuda")
    return preset.variant if cuda else None


@dataclass(frozen=True)
class RepoState:
    repo_id: str
    cached: bool  # every file the pipeline needs is in the snapshot
    snapshot: Path | None
    size_on_disk: int  # bytes of the needed files present
    variants: tuple[str, ...]  # "fp16", "full"


def _snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_cache_dir())
    except CacheNotFound:
        return None
    for repo in info.repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            main = [r for r in repo.revisions if "main" in r.refs] or sorted(
                repo.revisions, key=lambda r: r.last_modified
            )
            if main:
                return Path(main[-1].snapshot_path)
    return None


def repo_state(repo_id: str) -> RepoState:
    """Whether ``repo_id`` is cached completely for at least one variant, and where."""
    snapshot = _snapshot(repo_id)
    index_path = snapshot / "model_index.json" if snapshot else None
    if snapshot is not None and not index_path.is_file() and (snapshot / "config.json").is_file():
        return _transformers_state(repo_id, snapshot)
    if snapshot is None or index_path is None or not index_path.is_file():
        return RepoState(repo_id, False, snapshot, 0, ())
    files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    index = json.loads(index_path.read_text(encoding="utf-8"))
    present: list[str] = []
    size = 0
    seen: set[str] = set()
    for variant, label in (("fp16", "fp16"), (None, "full")):
        needed = needed_files(repo_id, files, index, variant=variant)
        complete = all((snapshot / f).is_file() for f in needed) and any(
            f.endswith(_WEIGHT_SUFFIXES) for f in needed
        )
        if variant and not any(_is_variant(f, variant) for f in needed):
            complete = False  # no fp16 files: "full" covers it
        if complete:
            present.append(label)
            for f in needed:
                if f not in seen:
                    seen.add(f)
                    size += (snapshot / f).stat().st_size
    return RepoState(repo_id, bool(present), snapshot, size, tuple(present))


def _transformers_state(repo_id: str, snapshot: Path) -> RepoState:
    files = [p.name for p in snapshot.iterdir() if p.is_file()]
    needed = needed_transformers_files(files)
    complete = any(_format_of(f) for f in needed)  # present by construction; weights decide
    size = sum((snapshot / f).stat().st_size for f in needed) if complete else 0
    return RepoState(repo_id, complete, snapshot, size, ("full",) if complete else ())


def cache_state(name: str) -> list[RepoState]:
    return [repo_state(r) for r in repo_ids(name)]


def pull(name: str, *, variant: str | None = "auto", device: str = "auto",
         token: str | None = None, tiny_decoder: bool = True) -> list[Path]:  # fmt: skip
    """Fetch what preset ``name``'s pipeline needs into the hub cache, and with
    ``tiny_decoder`` its tiny decoder too (TAESD, a few MB: what ``decoder=auto`` takes on a
    CPU, models/optimize.py); returns the snapshots."""
    ids = repo_ids(name)
    if not ids:
        raise ModelUnavailable(
            f"The model {name} has nothing to download: it is built here, not fetched."
        )
    chosen = None if name not in PRESETS else choose_variant(name, variant=variant, device=device)
    snapshots = [pull_repo(repo_id, variant=chosen, token=token) for repo_id in ids]
    tiny = tiny_decoder_repo(name) if tiny_decoder else None
    if tiny is not None:
        snapshots.append(pull_repo(tiny, token=token))
    return snapshots


def tiny_decoder_repo(name: str) -> str | None:
    """The hub repository of preset ``name``'s tiny decoder, or None (none, or built here)."""
    preset = PRESETS.get(name)
    tiny = preset.tiny_decoder if preset else None
    return tiny if tiny and tiny.count("/") == 1 else None


def pull_repo(repo_id: str, *, variant: str | None = None, token: str | None = None) -> Path:
    """Fetch what the pipeline in ``repo_id`` needs (``variant``'s weights where it has them)
    and return its snapshot folder; also what loading does when downloads are allowed."""
    import httpx2 as httpx  # huggingface_hub 2.4 speaks HTTP through httpx2
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    cache = hf_cache_dir()
    token = token or os.environ.get("HF_TOKEN") or None
    try:
        info = HfApi().model_info(repo_id, token=token)
        files = [s.rfilename for s in info.siblings or []]
        # revision "main", not info.sha: only a branch name makes huggingface_hub write
        # refs/main, which offline loading (from_pretrained(local_files_only=True)) resolves.
        if "model_index.json" in files or not files:
            index_file = hf_hub_download(repo_id, "model_index.json", cache_dir=cache, token=token)
            index = json.loads(Path(index_file).read_text(encoding="utf-8"))
            wanted = needed_files(repo_id, files, index, variant=variant)
        else:  # a transformers model: the captioner, CLIP, the prompt expander
            hf_hub_download(repo_id, "config.json", cache_dir=cache, token=token)  # refs/main
            wanted = needed_transformers_files(files)
        path = snapshot_download(repo_id, allow_patterns=wanted, cache_dir=cache, token=token)
    except GatedRepoError as error:
        licence = (
            _LICENCE if repo_id.startswith("DeepFloyd/") else f"https://huggingface.co/{repo_id}"
        )
        raise ModelUnavailable(
            f"The model {repo_id} is gated: accept its licence at {licence} and give a token "
            "(set HF_TOKEN or run `hf auth login`)."
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelUnavailable(f"The Hugging Face hub has no model {repo_id}.") from error
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        raise ModelUnavailable(
            f"The model {repo_id} could not be fetched: the Hugging Face hub is unreachable "
            "or HF_HUB_OFFLINE is set."
        ) from error
    except httpx.TransportError as error:  # DNS, refused connection, timeout
        raise ModelUnavailable(
            f"The model {repo_id} could not be fetched: the connection to the Hugging Face hub "
            f"failed ({type(error).__name__}); check the network and pull again (it resumes)."
        ) from error
    except HfHubHTTPError as error:
        raise ModelUnavailable(
            f"The Hugging Face hub refused {repo_id} ({type(error).__name__})."
        ) from error
    # snapshot_download falls back to the cache when the hub refuses the listing (HTTP errors are
    # swallowed there): check that every wanted file really arrived.
    missing = [f for f in wanted if not (Path(path) / f).is_file()]
    if missing:
        raise ModelUnavailable(
            f"The download of {repo_id} is incomplete ({len(missing)} file(s) missing, e.g. "
            f"{missing[0]}); run the pull again."
        )
    return Path(path)
