"""The hub cache's layout: where a stand-in goes and how its files are laid out there – what
``huggingface_hub`` leaves after a download (content-addressed blobs, a snapshot of links to
them, ``refs/main``), plus the marker that says the weights are random."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.hub import STANDIN_FIELD

Safety = Literal["pass", "flag-all"]


@dataclass(frozen=True)
class RealRepo:
    """What a stand-in mirrors, and where it departs from the real repository."""

    repo_id: str
    pipeline_class: str
    variants: tuple[str, ...]  # weight variants besides the default files, e.g. ("fp16",)
    weights: Literal["safetensors", "bin"]
    differences: tuple[str, ...]


def revision_of(repo_id: str) -> str:
    """A stable 40-hex commit id for a stand-in repository (what ``refs/main`` holds)."""
    return hashlib.sha1(f"playlist-cover stand-in {repo_id}".encode()).hexdigest()


def repo_folder(hub_cache: Path, repo_id: str) -> Path:
    return Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))


def into_cache(files: Path, hub_cache: Path, repo_id: str) -> Path:
    """Move ``files`` into the cache as huggingface_hub lays a download out: content-addressed
    blobs, a snapshot of relative symlinks to them, and ``refs/main`` naming the snapshot. The
    top-level model_index.json or config.json gets the stand-in marker first."""
    _mark(files, repo_id)
    repo = repo_folder(hub_cache, repo_id)
    if repo.exists():
        shutil.rmtree(repo)
    revision = revision_of(repo_id)
    snapshot = repo / "snapshots" / revision
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(files)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(link.relative_to(repo).parts) - 1)) / "blobs" / digest)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def _mark(files: Path, repo_id: str) -> None:
    """Write :data:`STANDIN_FIELD` into the repository's top-level description (model_index.json
    for a pipeline, config.json for a model): the weights are random, whatever else looks real."""
    top = files / "model_index.json"
    if not top.is_file():
        top = files / "config.json"
    data = json.loads(top.read_text(encoding="utf-8"))
    data[STANDIN_FIELD] = f"random weights standing in for {repo_id} (modeltools/standins/)"
    top.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
