"""The tiny decoder exported to ONNX and run outside torch: the optional ``decoder_runtime``
backends ``onnx`` (ONNX Runtime) and ``openvino`` (OpenVINO), on a CPU.

    AutoencoderTiny.decoder (torch) ─► torch.onnx.export, once per weights ─► <cache>/onnx/*.onnx
                                                                              │
    latents (any dtype, B×4×h×w) ─► float32 NumPy ─► ONNX Runtime session  ◄─┤
                                                  └► OpenVINO, compiled per ◄─┘
                                                     input shape (float32, or bfloat16 with
                                                     cpu_bfloat16) ─► pixels, latents' dtype

Measured on the 2-core development CPU (docs/benchmarks/cpu-onnx-notes-20261202.md): for a
4-candidate 512 px batch, OpenVINO decodes about 2× faster than torch's tuned decoder in both
precisions; ONNX Runtime about 1.9× faster than torch in float32 and no faster than torch in
bfloat16. The module that replaces ``AutoencoderTiny.decoder`` keeps diffusers' ``decode``
(slicing, tiling, previews) as it is. Only the tiny autoencoder's decoder goes there: the full
VAE and the UNet stay in torch (docs/benchmarks/cpu-onnx-notes-20261202.md says why).

The runtimes and the exporter's ``onnx`` and ``onnxscript`` are the ``[onnx]`` and
``[openvino]`` extras, no dependency of the bot: without them the switch fails with the install
command.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from models.errors import ModelUnavailable

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # part of the file name: bump when the export's settings change
OPENVINO_SHAPES = 8  # compiled input shapes an OpenVINO decoder keeps (a few sizes × batches)


def install_hint(runtime: str) -> str:
    return f"pip install -e '.[{runtime}]' in the project's checkout"


def onnx_decoder(tiny: Any, cache_dir: Path) -> torch.nn.Module:
    """A module that decodes like ``tiny.decoder`` (an ``AutoencoderTiny``'s) through ONNX
    Runtime's CPU provider, in float32.

    Raises :class:`ModelUnavailable` when ONNX Runtime or the exporter is not installed, or the
    export fails."""
    onnxruntime = _runtime("onnxruntime", "onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores torch was given
    session = onnxruntime.InferenceSession(
        str(exported(tiny, cache_dir)), options, providers=["CPUExecutionProvider"]
    )
    return OnnxRuntimeModule(session)


def openvino_decoder(tiny: Any, cache_dir: Path, *, bfloat16: bool = False) -> torch.nn.Module:
    """Like :func:`onnx_decoder`, through OpenVINO on the CPU, in float32 or (``bfloat16``, the
    runner's ``cpu_bfloat16``) bfloat16 where the CPU has it."""
    openvino = _runtime("openvino", "openvino")
    core = openvino.Core()
    model = core.read_model(str(exported(tiny, cache_dir)))
    config = {
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if bfloat16 else "f32",
    }
    return OpenVinoModule(core, model, config)


def _runtime(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as error:
        raise ModelUnavailable(
            f"decoder_runtime={extra} needs {module}, which is not installed: "
            f"{install_hint(extra)} (or use decoder_runtime=torch)."
        ) from error


def exported(tiny: Any, cache_dir: Path) -> Path:
    """``tiny``'s decoder as an ONNX file in ``cache_dir/onnx/``: exported on first use, named
    by a hash of the decoder's weights, reused after."""
    name = f"tiny-decoder-v{EXPORT_VERSION}-{fingerprint(tiny.decoder)}.onnx"
    path = Path(cache_dir) / "onnx" / name
    if not path.is_file():
        _export(tiny.decoder, tiny.config.latent_channels, path)
    return path


def fingerprint(module: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over the module's tensors (names, shapes, float32 bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _export(decoder: torch.nn.Module, channels: int, path: Path) -> None:
    """``decoder`` (float32 copy) to ONNX at ``path``, with batch, height and width free."""
    import copy

    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; say so up front)
    except ImportError as error:
        raise ModelUnavailable(
            "The tiny decoder's ONNX export needs onnx and onnxscript, which are not "
            f"installed: {install_hint('onnx')}."
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
                module,
                (latents,),
                str(partial),
                dynamo=True,
                optimize=True,
                external_data=False,
                dynamic_shapes=({0: batch, 2: height, 3: width},),
                verbose=False,
            )
        os.replace(partial, path)  # whole files only: a crash mid-export leaves no bad cache
    except Exception as error:  # the exporter raises many types; all mean "no ONNX file"
        partial.unlink(missing_ok=True)
        raise ModelUnavailable(
            f"Exporting the tiny decoder to ONNX failed ({type(error).__name__}: {error}); "
            "use decoder_runtime=torch."
        ) from error


class _Outside(torch.nn.Module):
    """Stands in for a torch module: tensors in, tensors out, in the input's dtype and device.
    It holds no parameters, so ``.to(dtype)`` and ``.to(memory_format)`` leave it as it is."""

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        pixels = self.run(latents.detach().to("cpu", torch.float32).contiguous().numpy())
        return torch.from_numpy(pixels).to(device=latents.device, dtype=latents.dtype)

    def run(self, latents: Any) -> Any:  # (B, C, h, w) float32 → (B, 3, 8h, 8w) float32
        raise NotImplementedError


class OnnxRuntimeModule(_Outside):
    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def run(self, latents: Any) -> Any:
        (pixels,) = self.session.run(None, {self.input_name: latents})
        return pixels


class OpenVinoModule(_Outside):
    """Compiles the model once per input shape (static shapes are OpenVINO's fast path on a
    CPU) and keeps the last :data:`OPENVINO_SHAPES` of them."""

    def __init__(self, core: Any, model: Any, config: dict[str, Any]) -> None:
        super().__init__()
        self.core, self.model, self.config = core, model, config
        self.compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def run(self, latents: Any) -> Any:
        shape = tuple(latents.shape)
        compiled = self.compiled.pop(shape, None)
        if compiled is None:
            model = self.model.clone()
            model.reshape({model.inputs[0]: list(shape)})
            compiled = self.core.compile_model(model, "CPU", self.config)
        self.compiled[shape] = compiled  # most recently used last
        while len(self.compiled) > OPENVINO_SHAPES:
            self.compiled.popitem(last=False)
        return compiled(latents)[compiled.output(0)]
