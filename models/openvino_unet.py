"""The UNet run by OpenVINO on a CPU: the optional ``unet_runtime=openvino`` switch.

    pipeline's UNet (torch) ─► float32 copy, traced by openvino.convert_model, once per
        │                      weights and OpenVINO version ─► <cache>/openvino/unet-*.xml/.bin
        ▼
    OpenVinoUNet (in the pipeline's ``unet`` slot, the UNet's call signature)
        sample (B, 4, h, w), timestep, encoder_hidden_states (B, tokens, width), any dtype
        ─► float32 NumPy ─► the IR reshaped to these static shapes and compiled (float32, or
           bfloat16 through OpenVINO's inference precision hint with ``cpu_bfloat16``), kept
           per shape ─► noise prediction in the input's dtype, as ``UNet2DConditionOutput``

This is the path of the fastest CPU peer, FastSD CPU (its whole pipeline in OpenVINO, static
shapes per batch and size). The traced graph is saved with its batch and sizes free, and the
static shapes are applied when it is compiled: one export (minutes for a real-size UNet on a
small CPU) serves every batch the queue makes, and each new shape costs only a compile (seconds
to tens of seconds), kept for the last :data:`COMPILED_SHAPES` shapes.

Only a plain text-conditioned UNet goes here (SD 1.x/2.x, sd-turbo: no added conditioning, no
ControlNet residuals); the text encoder and the decoder are left where they are (the prompt
cache runs the text encoder once per cover; models/exported_decoder.py puts the tiny decoder in
OpenVINO). OpenVINO is the ``[openvino]`` extra: without it the switch fails with the install
command and ``auto`` keeps the torch UNet.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from models.errors import ModelUnavailable
from models.exported_decoder import fingerprint, install_hint
from models.optimize import Optimizations

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # part of the file name: bump when the export's settings change
COMPILED_SHAPES = 3  # static shapes one OpenVinoUNet keeps compiled (each holds the weights)
PROGRESS_EVERY_S = 30.0  # how often a running export says it is still running


def openvino_available() -> bool:
    """Whether OpenVINO can be imported (for ``unet_runtime=auto``)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def supports(unet: Any) -> str | None:
    """Why ``unet`` cannot run here (None where it can): only text-conditioned UNets without
    added conditioning, whose forward takes (sample, timestep, encoder_hidden_states)."""
    config = getattr(unet, "config", None)
    if type(unet).__name__ != "UNet2DConditionModel" or config is None:
        return f"{type(unet).__name__} is not a diffusers UNet2DConditionModel"
    if config.get("addition_embed_type") or config.get("class_embed_type"):
        return "it takes added conditioning (SDXL-style), which the export leaves out"
    if config.get("time_cond_proj_dim"):
        return "it takes a guidance embedding (timestep_cond), which the export leaves out"
    return None


def openvino_unet(unet: Any, cache_dir: Path, *, bfloat16: bool = False) -> OpenVinoUNet:
    """An :class:`OpenVinoUNet` for ``unet`` (a diffusers ``UNet2DConditionModel`` on the CPU),
    running in float32 or, with ``bfloat16``, in bfloat16 where the CPU has it.

    Raises :class:`ModelUnavailable` when OpenVINO is not installed, the UNet is of a kind the
    export leaves out (:func:`supports`), or the export fails."""
    openvino = _import_openvino()
    why = supports(unet)
    if why is not None:
        raise ModelUnavailable(f"unet_runtime=openvino cannot run this UNet: {why}.")
    path = exported(unet, cache_dir, openvino)
    core = openvino.Core()
    config = {
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),  # the cores torch was given
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if bfloat16 else "f32",
    }
    dtype = torch.bfloat16 if bfloat16 else torch.float32
    return OpenVinoUNet(core, core.read_model(str(path)), config, unet.config, dtype)


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as error:
        raise ModelUnavailable(
            "unet_runtime=openvino needs openvino, which is not installed: "
            f"{install_hint('openvino')} (or use unet_runtime=torch)."
        ) from error
    return openvino


def exported(unet: Any, cache_dir: Path, openvino: Any) -> Path:
    """``unet`` as an OpenVINO IR (``.xml`` + ``.bin``) in ``cache_dir/openvino/``: converted on
    first use, named by a hash of the weights and the OpenVINO version, reused after."""
    version = openvino.__version__.split("-")[0]  # e.g. 2026.4.1: the IR's producer
    name = f"unet-v{EXPORT_VERSION}-{fingerprint(unet)}-ov{version}.xml"
    path = Path(cache_dir) / "openvino" / name
    if not path.is_file():
        _export(unet, path, openvino)
    return path


def _export(unet: Any, path: Path, openvino: Any) -> None:
    """A float32 copy of ``unet`` traced by ``openvino.convert_model`` and saved at ``path``
    (float32 weights: bfloat16 is chosen when compiling), batch and sizes left free."""
    # 1. A float32, contiguous copy: the pipeline's own UNet may be bfloat16 and channels-last.
    module = _Forward(copy.deepcopy(unet).to("cpu", torch.float32).eval())
    module = module.to(memory_format=torch.contiguous_format)
    config = unet.config
    factor = 2 ** (len(config.block_out_channels) - 1)  # the UNet's own downsampling
    side = max(8, factor)  # latents: small, but divisible all the way down
    example = (
        torch.randn(2, config.in_channels, side, side),  # (B, C, h, w)
        torch.full((2,), 500.0),  # (B,) timesteps
        torch.randn(2, 77, config.cross_attention_dim),  # (B, tokens, width)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.xml")
    with _progress(f"Exporting the UNet to OpenVINO (once per weights): {path.name}"):
        try:
            # 2. Trace and convert. The tracer's warnings are about Python branches on shapes,
            #    which the traced graph fixes for these sizes; the UNet's branches depend on
            #    the batch only through the 64-image attention chunking, far above a cover's.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = openvino.convert_model(module, example_input=example)
            # 3. Save whole files only: the .bin first, then the .xml this function checks.
            openvino.save_model(model, str(partial), compress_to_fp16=False)
            os.replace(partial.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(partial, path)
        except Exception as error:  # the converter raises many types; all mean "no IR"
            partial.unlink(missing_ok=True)
            partial.with_suffix(".bin").unlink(missing_ok=True)
            raise ModelUnavailable(
                f"Exporting the UNet to OpenVINO failed ({type(error).__name__}: {error}); "
                "use unet_runtime=torch."
            ) from error


@contextmanager
def _progress(line: str) -> Iterator[None]:
    """Log ``line``, then every :data:`PROGRESS_EVERY_S` seconds that it is still running,
    then how long it took: a real-size UNet's export takes minutes on a small CPU."""
    began = time.perf_counter()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(PROGRESS_EVERY_S):
            log.info("… still exporting the UNet: %.0f s", time.perf_counter() - began)

    log.info(line)
    ticker = threading.Thread(target=tick, name="unet-export-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    log.info("Exported the UNet in %.0f s", time.perf_counter() - began)


class _Forward(torch.nn.Module):
    """The UNet with the three inputs the export keeps, returning the bare noise prediction."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


class OpenVinoUNet(torch.nn.Module):
    """Stands in for a ``UNet2DConditionModel`` in a pipeline: the same call, the same
    ``UNet2DConditionOutput``, the same ``config``; ``dtype`` is the precision it computes in,
    which the pipeline uses for its latents and prompt embeddings.

    It holds no parameters, so the optimisations' ``.to(dtype)`` and ``.to(memory_format)``
    leave it as it is. The IR is compiled once per input shape (static shapes are OpenVINO's
    fast path on a CPU), the last :data:`COMPILED_SHAPES` of them kept."""

    def __init__(
        self, core: Any, model: Any, config: dict[str, Any], unet_config: Any, dtype: Any
    ) -> None:
        super().__init__()
        self.core, self.model, self.ov_config = core, model, config
        self.config = unet_config  # diffusers reads in_channels, sample_size, … from it
        self._dtype = dtype
        self.compiled: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        *,
        timestep_cond: Any = None,
        added_cond_kwargs: Any = None,
        cross_attention_kwargs: Any = None,
        down_block_additional_residuals: Any = None,
        mid_block_additional_residual: Any = None,
        return_dict: bool = True,
        **unused: Any,
    ) -> Any:
        extras = {
            "timestep_cond": timestep_cond,
            "added_cond_kwargs": added_cond_kwargs or None,
            "cross_attention_kwargs": cross_attention_kwargs or None,
            "down_block_additional_residuals": down_block_additional_residuals,
            "mid_block_additional_residual": mid_block_additional_residual,
            **{name: value for name, value in unused.items() if value is not None},
        }
        taken = [name for name, value in extras.items() if value is not None]
        if taken:
            raise ValueError(
                f"The OpenVINO UNet takes sample, timestep and encoder_hidden_states only, got "
                f"{', '.join(taken)}; use unet_runtime=torch for this pipeline."
            )
        batch = sample.shape[0]
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(batch)
        inputs = tuple(
            tensor.detach().to("cpu", torch.float32).contiguous().numpy()
            for tensor in (sample, steps, encoder_hidden_states)
        )  # (B, C, h, w), (B,), (B, tokens, width)
        compiled = self._compiled(tuple(tuple(array.shape) for array in inputs))
        noise = compiled(inputs)[compiled.output(0)]  # (B, C, h, w) float32
        noise = torch.from_numpy(noise).to(device=sample.device, dtype=sample.dtype)
        if not return_dict:
            return (noise,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=noise)

    def _compiled(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        compiled = self.compiled.pop(shapes, None)
        if compiled is None:
            began = time.perf_counter()
            model = self.model.clone()
            model.reshape(
                {port: list(shape) for port, shape in zip(model.inputs, shapes, strict=True)}
            )
            compiled = self.core.compile_model(model, "CPU", self.ov_config)
            log.info(
                "Compiled the OpenVINO UNet for %s (%s) in %.1f s",
                shapes[0],
                self.ov_config["INFERENCE_PRECISION_HINT"],
                time.perf_counter() - began,
            )
        self.compiled[shapes] = compiled  # most recently used last
        while len(self.compiled) > COMPILED_SHAPES:
            self.compiled.popitem(last=False)
        return compiled


def use_openvino_unet(
    pipe: Any, name: str, options: Optimizations, device: str, cache_dir: Path | None
) -> None:
    """Swap ``pipe``'s torch UNet for OpenVINO's where ``options.unet_runtime`` asks for it on a
    CPU (models/runner.py calls it once a pipeline is set up). Asked for by name, a missing
    OpenVINO or a UNet it cannot run is an error; under ``auto`` the torch UNet stays and the
    log says why."""
    if not options.wants_openvino_unet(pipe.unet, device=device, installed=openvino_available()):
        return
    named = options.unet_runtime == "openvino"
    if device != "cpu":
        log.warning("unet_runtime=openvino ignored for %s: not on a CPU", name)
        return
    why = supports(pipe.unet)
    if why is not None and not named:
        log.info("Keeping the torch UNet for %s: %s", name, why)
        return
    try:
        pipe.unet = openvino_unet(pipe.unet, cache_dir, bfloat16=options.bfloat16_on_cpu(pipe.unet))
        log.info("%s's UNet runs in OpenVINO (unet_runtime=%s)", name, options.unet_runtime)
    except ModelUnavailable as error:
        if named:
            raise
        log.warning("Keeping the torch UNet for %s: %s", name, error)
