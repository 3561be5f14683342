"""The tiny decoder run by ONNX Runtime: the optional ``decoder_runtime=onnx`` backend.

    AutoencoderTiny.decoder (torch) ─► torch.onnx.export, once per weights ─► <cache>/onnx/*.onnx
                                                                              │
    latents (any dtype, B×4×h×w) ─► float32 NumPy ─► onnxruntime session ─► pixels, latents' dtype

Only the tiny autoencoder's decoder runs there, and only on a CPU: measured on the 2-core
development CPU (docs/benchmarks/cpu-onnx-notes-20261202.md), ONNX Runtime decodes a
4-candidate 512 px batch about 1.7× faster than torch in float32 with channels-last – the
decoder a CPU without bfloat16 runs – but no faster than torch in bfloat16 (``cpu_bfloat16``),
so it is opt-in, for CPUs where bfloat16 is off. The module that replaces
``AutoencoderTiny.decoder`` keeps diffusers' ``decode`` (slicing, tiling, previews) as it is.

ONNX Runtime, ``onnx`` and ``onnxscript`` (the exporter's) are the ``[onnx]`` extra, no
dependency of the bot: without them ``decoder_runtime=onnx`` fails with the install command.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from models.errors import ModelUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'playlist-cover[onnx]'"
EXPORT_VERSION = 1  # part of the file name: bump when the export's settings change


def onnx_decoder(tiny: Any, cache_dir: Path) -> Any:
    """A module that decodes like ``tiny.decoder`` (an ``AutoencoderTiny``'s) through ONNX
    Runtime, exported into ``cache_dir/onnx/`` on first use and reused after (the file is named
    by a hash of the decoder's weights).

    Raises :class:`ModelUnavailable` when ONNX Runtime or the exporter is not installed, or the
    export fails."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ModelUnavailable(
            f"decoder_runtime=onnx needs ONNX Runtime, which is not installed: {INSTALL_HINT} "
            "(or use decoder_runtime=torch)."
        ) from error
    import torch

    path = (
        Path(cache_dir)
        / "onnx"
        / f"tiny-decoder-v{EXPORT_VERSION}-{_fingerprint(tiny.decoder)}.onnx"
    )
    if not path.is_file():
        _export(tiny.decoder, tiny.config.latent_channels, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores torch was given
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return OnnxModule(session)


def _fingerprint(module: Any) -> str:
    """16 hex digits of SHA-256 over the module's tensors (names, shapes, float32 bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _export(decoder: Any, channels: int, path: Path) -> None:
    """``decoder`` (float32 copy) to ONNX at ``path``, with batch, height and width free."""
    import copy

    import torch

    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; say so up front)
    except ImportError as error:
        raise ModelUnavailable(
            f"decoder_runtime=onnx needs the ONNX exporter (onnx, onnxscript): {INSTALL_HINT}."
        ) from error
    module = copy.deepcopy(decoder).to("cpu", torch.float32).eval()
    module = module.to(memory_format=torch.contiguous_format)
    latents = torch.randn(2, channels, 16, 16)  # (B, C, h, w): 128 px for TAESD
    batch, height, width = (torch.export.Dim(n, min=1) for n in ("batch", "height", "width"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    log.info("Exporting the tiny decoder to ONNX (once per weights): %s", path.name)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, (latents,), str(partial), dynamo=True, optimize=True, external_data=False,
                dynamic_shapes=({0: batch, 2: height, 3: width},), verbose=False,
            )  # fmt: skip
        os.replace(partial, path)  # whole files only: a crash mid-export leaves no bad cache
    except Exception as error:  # the exporter raises many types; all mean "no ONNX file"
        partial.unlink(missing_ok=True)
        raise ModelUnavailable(
            f"Exporting the tiny decoder to ONNX failed ({type(error).__name__}: {error}); "
            "use decoder_runtime=torch."
        ) from error


def _module_base() -> type:
    import torch

    return torch.nn.Module


class OnnxModule(_module_base()):  # type: ignore[misc]
    """Stands in for a torch module: tensors in, tensors out, in the input's dtype and device.
    It holds no parameters, so ``.to(dtype)`` and ``.to(memory_format)`` leave it as it is."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, latents: Any) -> Any:
        import torch

        feed = {self.input_name: latents.detach().to("cpu", torch.float32).contiguous().numpy()}
        (pixels,) = self.session.run(None, feed)
        return torch.from_numpy(pixels).to(device=latents.device, dtype=latents.dtype)
