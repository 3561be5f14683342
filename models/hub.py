"""The Hugging Face cache side of the hub presets: what is cached, what a pipeline needs, and
fetching exactly that (``python -m bot models`` and ``models pull``; see bot/__main__.py).

Everything goes through ``huggingface_hub``: ``HfApi.model_info`` for a repository's file list,
``snapshot_download(allow_patterns=...)`` for the download (its progress bar, its resume of
``.incomplete`` files), ``scan_cache_dir`` for what is on disk. The cache folder is
:func:`hf_cache_dir` (huggingface_hub reads HF_HOME once, at import).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.devices import cuda_available
from models.errors import ModelUnavailable
from models.hub_guard import COMMIT, DEADLINE_S, STALL_S, Guard, HubMisbehaved, guarded, shown
from models.presets import PRESETS, SUPPORT_MODELS

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
# The field modeltools/standins/ writes into a stand-in's top-level model_index.json (a pipeline)
# or config.json (a model repository): random weights in a real repository's layout, which
# nothing else tells apart from the real download. No hub repository has the field, and the
# libraries ignore it (diffusers drops "_" keys; transformers keeps it as a config attribute).
STANDIN_FIELD = "_playlist_cover_standin"


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


def repo_ids(name: str) -> list[str]:
    if name in SUPPORT_MODELS:  # the captioner, CLIP, the prompt expander (models/support.py)
        return [SUPPORT_MODELS[name].repo_id]
    preset = PRESETS.get(name)
    if preset is None:
        raise ModelUnavailable(
            f"Unknown model {shown(name)}; use one of {', '.join([*PRESETS, *SUPPORT_MODELS])}."
        )
    return [r for r in (preset.repo_id, preset.stage2_repo_id) if r]


def fetch_command(repo_id: str) -> str:
    """How a user fetches ``repo_id``, for an error: `models pull` with the name it takes (the
    preset or support model the repo belongs to, :func:`repo_ids`), and `hf download`, which
    works for any repo."""
    name = next((n for n in (*PRESETS, *SUPPORT_MODELS) if repo_id in repo_ids(n)), None)
    hf = f"`hf download {repo_id}`"
    return f"`python -m bot models pull {name}` or {hf}" if name else hf


def needed_files(
    repo_id: str, files: list[str], model_index: dict[str, Any], *, variant: str | None
) -> list[str]:
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
        and len(value) == 2
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
_TRANSFORMERS_WEIGHTS = (
    "model.safetensors",
    "model-",
    "pytorch_model.bin",
    "pytorch_model-",
    "diffusion_pytorch_model.",
)


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
    cuda = cuda_available() if device == "auto" else device.startswith("cuda")
    return preset.variant if cuda else None


@dataclass(frozen=True)
class RepoState:
    repo_id: str
    cached: bool  # every file the pipeline needs is in the snapshot
    snapshot: Path | None
    size_on_disk: int  # bytes of the needed files present
    variants: tuple[str, ...]  # "fp16", "full"
    standin: bool = False  # random weights from modeltools/standins/ (:data:`STANDIN_FIELD`)


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
    try:
        index = read_model_index(index_path.read_bytes(), repo_id)
    except ModelUnavailable:  # a broken index loads no pipeline: not cached
        return RepoState(repo_id, False, snapshot, 0, ())
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
    standin = STANDIN_FIELD in index
    return RepoState(repo_id, bool(present), snapshot, size, tuple(present), standin)


def _transformers_state(repo_id: str, snapshot: Path) -> RepoState:
    files = [p.name for p in snapshot.iterdir() if p.is_file()]
    needed = needed_transformers_files(files)
    complete = any(_format_of(f) for f in needed)  # present by construction; weights decide
    size = sum((snapshot / f).stat().st_size for f in needed) if complete else 0
    variants = ("full",) if complete else ()
    return RepoState(repo_id, complete, snapshot, size, variants, is_standin(snapshot))


def is_standin(snapshot: Path) -> bool:
    """Whether the snapshot folder ``snapshot`` is a stand-in: its model_index.json, or for a
    model repository its config.json, carries :data:`STANDIN_FIELD`."""
    for name in ("model_index.json", "config.json"):
        try:
            data = json.loads((snapshot / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return isinstance(data, dict) and STANDIN_FIELD in data
    return False


def cache_state(name: str) -> list[RepoState]:
    return [repo_state(r) for r in repo_ids(name)]


def pull(
    name: str,
    *,
    variant: str | None = "auto",
    device: str = "auto",
    token: str | None = None,
    tiny_decoder: bool = True,
    deadline_s: float = DEADLINE_S,
    stall_s: float = STALL_S,
) -> list[Path]:
    """Fetch what preset ``name``'s pipeline needs into the hub cache, and with
    ``tiny_decoder`` its tiny decoder too (TAESD, a few MB: what ``decoder=auto`` takes on a
    CPU, models/optimize.py); returns the snapshots. The whole pull ends within ``deadline_s``
    and a download that stalls for ``stall_s`` ends it (models/hub_guard.py)."""
    ids = repo_ids(name)
    if not ids:
        raise ModelUnavailable(
            f"The model {name} has nothing to download: it is built here, not fetched."
        )
    chosen = None if name not in PRESETS else choose_variant(name, variant=variant, device=device)
    tiny = tiny_decoder_repo(name) if tiny_decoder else None
    guard = Guard(deadline_s=deadline_s, stall_s=stall_s)
    snapshots = [pull_repo(repo_id, variant=chosen, token=token, guard=guard) for repo_id in ids]
    if tiny is not None:
        snapshots.append(pull_repo(tiny, token=token, guard=guard))
    return snapshots


def tiny_decoder_repo(name: str) -> str | None:
    """The hub repository of preset ``name``'s tiny decoder, or None (none, or built here)."""
    preset = PRESETS.get(name)
    tiny = preset.tiny_decoder if preset else None
    return tiny if tiny and tiny.count("/") == 1 else None


def read_model_index(data: bytes, repo_id: str) -> dict[str, Any]:
    """``model_index.json`` as a JSON object whose components are ``[library, class]`` pairs
    (``[null, null]`` for a left-out one); anything else is a :class:`ModelUnavailable` that
    says what is wrong, for a file from the hub or from the cache alike."""
    try:
        index = json.loads(data)
    except (ValueError, RecursionError) as error:  # also UnicodeDecodeError
        raise ModelUnavailable(f"The model_index.json of {repo_id} is not JSON.") from error
    if not isinstance(index, dict):
        raise ModelUnavailable(f"The model_index.json of {repo_id} is not a JSON object.")
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list):
            continue  # "_class_name", "requires_safety_checker": settings, not components
        pair = len(value) == 2 and all(v is None or isinstance(v, str) for v in value)
        if not pair or (value[0] is None) != (value[1] is None) or not safe_name(key):
            raise ModelUnavailable(
                f"The model_index.json of {repo_id} lists component {shown(key)} as "
                f"{shown(json.dumps(value))}, not [library, class]."
            )
    return index


# A repository path the hub may hand us: relative, '/'-separated, no '.' or '..' parts, printable,
# and short enough for any file system (255 bytes a part; the hub itself caps paths far lower).
_SAFE_PART = re.compile(r"[^\x00-\x1f\x7f\\/:*?\"<>|]{1,255}")


def safe_name(name: object) -> bool:
    if not isinstance(name, str) or not name or len(name) > 1024:
        return False
    parts = name.split("/")
    return all(_SAFE_PART.fullmatch(p) and p not in (".", "..") for p in parts)


def _listing(repo_id: str, token: str | None) -> tuple[str, dict[str, int | None]]:
    """The repository's commit and files with their listed sizes, from the hub's model info
    (``files_metadata``: the hub adds each file's size), checked before any file is asked for."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo_id, token=token, files_metadata=True)
        sha, siblings = info.sha, list(info.siblings or [])
        listed = {s.rfilename: s.size for s in siblings}
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSON, shape
        raise HubMisbehaved(
            f"The hub's model info for {repo_id} is not a model listing ({type(error).__name__})."
        ) from error
    if not isinstance(sha, str) or not COMMIT.fullmatch(sha):
        raise HubMisbehaved(
            f"The hub's model info for {repo_id} names commit {shown(str(sha))}, not a 40-digit "
            "hex commit."
        )
    unsafe = next((name for name in listed if not safe_name(name)), None)
    if unsafe is not None:
        raise HubMisbehaved(
            f"The hub lists an unsafe file name in {repo_id}: {shown(str(unsafe))}; nothing "
            "was fetched."
        )
    sizes = [size for size in listed.values() if size is not None]
    if not all(isinstance(size, int) and size >= 0 for size in sizes):
        raise HubMisbehaved(f"The hub's model info for {repo_id} lists sizes that are not sizes.")
    return sha, listed


def pull_repo(
    repo_id: str,
    *,
    variant: str | None = None,
    token: str | None = None,
    guard: Guard | None = None,
) -> Path:
    """Fetch what the pipeline in ``repo_id`` needs (``variant``'s weights where it has them)
    and return its snapshot folder; also what loading does when downloads are allowed. Steps:

    1. list the repository (commit, files, sizes) and check the names and the commit;
    2. fetch model_index.json and pick the files the pipeline needs from it (or, for a
       transformers model, from the listing);
    3. fetch them one at a time, each held to its listed size.

    One file at a time rather than ``snapshot_download``: the guard must know which file a
    stream belongs to for its cap, and snapshot_download lists the repository again (a second
    answer to check) before fetching in 8 threads.
    """
    import httpx2 as httpx  # huggingface_hub 2.4 speaks HTTP through httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    cache = hf_cache_dir()
    token = token or os.environ.get("HF_TOKEN") or None
    guard = guard or Guard()

    def fetch(filename: str) -> Path:
        # revision "main", not the sha: only a branch name makes huggingface_hub write
        # refs/main, which offline loading (from_pretrained(local_files_only=True)) resolves.
        guard.file, guard.size = filename, listed.get(filename)
        if guard.size is None and filename != "model_index.json":
            raise HubMisbehaved(f"The hub lists no size for {filename} in {repo_id}.")
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache, token=token))
        finally:
            guard.file = guard.size = None

    try:
        with guarded(guard):
            guard.commit = None
            sha, listed = _listing(repo_id, token)  # 1.
            guard.commit = sha
            files = list(listed)
            if "model_index.json" in files or not files:  # 2.
                index_file = fetch("model_index.json")
                index = read_model_index(index_file.read_bytes(), repo_id)
                wanted = needed_files(repo_id, files, index, variant=variant)
            else:  # a transformers model: the captioner, CLIP, the prompt expander
                wanted = needed_transformers_files(files)
            if not wanted:
                raise HubMisbehaved(f"The hub lists no files a pipeline loads in {repo_id}.")
            paths = [fetch(filename) for filename in wanted]  # 3.
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
    except httpx.TransportError as error:  # DNS, refused connection, a dropped connection
        raise ModelUnavailable(
            f"The model {repo_id} could not be fetched: the connection to the Hugging Face hub "
            f"failed ({type(error).__name__}); check the network and pull again (it resumes)."
        ) from error
    except HfHubHTTPError as error:
        raise ModelUnavailable(
            f"The Hugging Face hub refused {repo_id} ({type(error).__name__})."
        ) from error
    except OSError as error:  # huggingface_hub's size check, or a cache that can't be written
        raise ModelUnavailable(
            f"The model {repo_id} could not be stored: {shown(str(error), 200)}; pull again."
        ) from error
    return paths[0].parents[len(Path(wanted[0]).parts) - 1]
