"""What the runner does to make a pipeline fast, one switch per trick.

Each switch is independent so the benchmark can show what each one buys
(``python -m modeltools.benchmark --compare --opt channels_last=off``). The baseline it compares
with is :meth:`Optimizations.plain`: a diffusers pipeline as loaded, in float32.

- ``half_precision``: load CUDA weights in the preset's float16/bfloat16. Never autocast: it
  gives black images and runs slower than half-precision weights (see docs/facts.md).
- ``cpu_bfloat16``: on a CPU, run every part in bfloat16 (oneDNN uses AVX-512 BF16 / AMX
  where the CPU has them); measured per part in docs/benchmarks/cpu-runtime-*.md (UNet 1.41×,
  tiny decoder 1.67–1.93× on the development CPU). ``auto`` (the default) takes it where the
  CPU has native BF16 (:func:`cpu_has_native_bfloat16`) and the UNet is real-size (at least
  :data:`BFLOAT16_FROM` parameters): a CPU without BF16 emulates it, and the 1.5M-parameter
  embedded model was trained and measured in float32 and gains nothing worth its rounding.
- ``sdpa``: attention through ``torch.nn.functional.scaled_dot_product_attention`` (fused
  kernels) instead of diffusers' explicit softmax(QKᵀ)V.
- ``channels_last``: UNet and VAE weights in NHWC memory order, which convolution kernels on
  both CPUs (oneDNN) and GPUs (cuDNN) prefer.
- ``compile``: ``torch.compile`` the UNet. The first call for each batch shape compiles, so
  batches are padded up to a few bucket sizes (:data:`BATCH_BUCKETS`) and the runner can warm
  them up once.
- ``vae_slicing_from``: decode latents one image at a time for batches at least this big: the
  VAE decoder's activations at 512² dominate peak memory in large batches.
- ``vae_tiling_from``: decode in overlapping tiles for images at least this many px a side,
  where even one image's decoder activations are too big.
- ``prompt_cache``: text-encoder outputs kept per pipeline for this many prompts, so
  ``/benchmark`` and people re-rolling the same playlist skip the text encoder.
- ``decoder``: ``full`` decodes with the preset's own VAE; ``tiny`` with its tiny autoencoder
  (diffusers' ``AutoencoderTiny``, TAESD for SD 1.x/2.x latents, from the hub cache); ``auto``
  takes the tiny one on a CPU where the preset has one and it is cached, the full one elsewhere.
  On a 2-core CPU the full decoder at 512 px costs more than a one-step sd-turbo UNet pass
  and the tiny one a small fraction of that (docs/benchmarks/cpu-runtime-*.md); a GPU decodes
  fast enough that the full decoder's quality wins. When the tiny decoder is loaded, previews
  are decoded with it too instead of the linear latent-to-RGB map.
- ``decoder_runtime``: ``torch`` runs the decoder in torch; ``openvino`` and ``onnx`` run the
  *tiny* decoder, exported once, in OpenVINO or ONNX Runtime on a CPU (models/exported_decoder.py;
  the ``[openvino]`` and ``[onnx]`` extras, so off by default). Measured for a 4-candidate
  512 px batch (docs/benchmarks/cpu-onnx-notes-20261202.md): OpenVINO about 2× torch's tuned
  decoder in float32 and in bfloat16; ONNX Runtime about 1.9× in float32, no gain in bfloat16.
- ``unet_runtime``: ``torch`` runs the UNet in torch; ``openvino`` runs it in OpenVINO on a
  CPU, exported once per weights and compiled for each batch's static shapes
  (models/openvino_unet.py; the ``[openvino]`` extra), in bfloat16 where ``cpu_bfloat16`` is on.
  ``auto`` (the default) takes OpenVINO on a CPU where it is installed, for a real-size UNet
  (:data:`BFLOAT16_FROM` parameters) of a kind it can run; torch elsewhere, and where
  OpenVINO is missing or its export fails. Measured side by side on the development CPU
  (docs/benchmarks/cpu-unet-runtime-20261207T180010Z.md, a busy machine, n = 3 pairs):
  OpenVINO's UNet 1.47× torch's bfloat16 UNet for sd-turbo, 1.21× for SD 1.5 with guidance.
- ``previews_every``: every N steps, rough pictures straight from the latents (a linear map of
  the 4 latent channels to RGB, no VAE), sent to the queue as :class:`~models.queue.Preview`
  events; the bot shows them in the status message. Off by default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)  # compiled batch sizes; a batch is padded up to one
BFLOAT16_FROM = 100_000_000  # UNet parameters from which cpu_bfloat16=auto takes bfloat16
# (SD 1.5's UNet has 860M, sd-turbo's 865M, small-sd's 580M; the embedded model's 1.5M)
ON_OFF_AUTO = ("auto", "on", "off")  # the ``cpu_bfloat16`` switch's values
DECODERS = ("auto", "full", "tiny")  # the ``decoder`` switch's values
DECODER_RUNTIMES = ("torch", "openvino", "onnx")  # the ``decoder_runtime`` switch's values
UNET_RUNTIMES = ("auto", "torch", "openvino")  # the ``unet_runtime`` switch's values
# Whether ``unet_runtime=auto`` takes OpenVINO where it is installed. Not yet: its gain was
# measured only on a busy machine (docs/performance.md, "The UNet in OpenVINO"), and the first
# cover would convert the UNet unasked (about 2 minutes, 12.9 GB of memory at its peak).
AUTO_UNET_OPENVINO = False


@dataclass(frozen=True)
class Optimizations:
    half_precision: bool = True
    cpu_bfloat16: str = "auto"  # one of ON_OFF_AUTO
    sdpa: bool = True
    channels_last: bool = True
    compile: bool = False  # off by default: minutes of compiling, and it needs a C compiler
    vae_slicing_from: int = 8  # 0: never slice
    vae_tiling_from: int = (
        1024  # px: decode in overlapping tiles from this image side on (0: never)
    )
    prompt_cache: int = 256  # prompts whose embeddings are kept; 0: encode every call
    previews_every: int = 0  # send a rough preview every N steps (0: none)
    decoder: str = "auto"  # one of DECODERS
    decoder_runtime: str = "torch"  # one of DECODER_RUNTIMES
    unet_runtime: str = "auto"  # one of UNET_RUNTIMES

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"`{name}` must be one of {', '.join(allowed)}, got {getattr(self, name)!r}."
                )
        if self.decoder_runtime != "torch" and self.decoder == "full":
            raise ValueError(
                f"decoder_runtime={self.decoder_runtime} runs the tiny decoder only; use "
                "decoder=tiny or auto with it, or decoder_runtime=torch."
            )
        if self.unet_runtime == "openvino" and self.compile:
            raise ValueError(
                "unet_runtime=openvino and compile=on both replace the torch UNet; pick one."
            )

    @classmethod
    def plain(cls) -> Optimizations:
        """Nothing switched on: a pipeline exactly as diffusers loads it (the baseline)."""
        return cls(
            half_precision=False,
            cpu_bfloat16="off",
            sdpa=False,
            channels_last=False,
            compile=False,
            vae_slicing_from=0,
            vae_tiling_from=0,
            prompt_cache=0,
            previews_every=0,
            decoder="full",
            decoder_runtime="torch",
            unet_runtime="torch",
        )

    def replace(self, text: str) -> Optimizations:
        """These optimisations with ``text`` applied: comma-separated ``name=value`` pairs,
        e.g. ``"channels_last=off,compile=on,vae_slicing_from=4"``.

        Raises ``ValueError`` naming the unknown switch or the bad value.
        """
        changes: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(self)}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition("=")
            name, value = name.strip(), value.strip().lower()
            if name not in fields:
                raise ValueError(f"Unknown optimisation {name!r}; known: {', '.join(fields)}.")
            if name == "cpu_bfloat16" and value in _SWITCH:
                value = "on" if _SWITCH[value] else "off"
            if name in _CHOICES:
                if value not in _CHOICES[name]:
                    allowed = ", ".join(_CHOICES[name])
                    raise ValueError(f"`{name}` takes {allowed}, got {value!r}.")
                changes[name] = value
            elif isinstance(getattr(self, name), bool):
                if value not in _SWITCH:
                    raise ValueError(f"`{name}` takes on or off, got {value!r}.")
                changes[name] = _SWITCH[value]
            else:
                if not value.isdigit():
                    raise ValueError(f"`{name}` takes a whole number, got {value!r}.")
                changes[name] = int(value)
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """A short line of what is on, for reports."""
        on = [
            name
            for name in ("half_precision", "sdpa", "channels_last", "compile")
            if getattr(self, name)
        ]
        if self.cpu_bfloat16 != "off":
            on.append(f"cpu_bfloat16={self.cpu_bfloat16}")
        if self.vae_slicing_from:
            on.append(f"vae_slicing≥{self.vae_slicing_from}")
        if self.vae_tiling_from:
            on.append(f"vae_tiling≥{self.vae_tiling_from}px")
        if self.prompt_cache:
            on.append("prompt_cache")
        if self.previews_every:
            on.append(f"previews/{self.previews_every}")
        if self.decoder != "full":
            on.append(f"decoder={self.decoder}")
        if self.decoder_runtime != "torch":
            on.append(f"decoder_runtime={self.decoder_runtime}")
        if self.unet_runtime == "openvino":  # auto depends on the machine: see the runner's log
            on.append(f"unet_runtime={self.unet_runtime}")
        return ", ".join(on) or "none"

    # -- applying them ---------------------------------------------------------------------

    def wants_tiny_decoder(self, *, has_one: bool, device: str) -> bool:
        """Whether to load the tiny decoder: asked for, or ``auto`` on a CPU where the preset
        has one (``has_one``). A ``tiny`` request for a preset without one is the loader's
        error to raise (it names the model)."""
        if self.decoder == "tiny":
            return True
        return self.decoder == "auto" and has_one and device == "cpu"

    def wants_openvino_unet(self, unet: Any, *, device: str, installed: bool) -> bool:
        """Whether to run ``unet`` in OpenVINO: asked for by name (where it is missing the
        loader raises with the install command), or ``auto`` on a CPU where OpenVINO is
        ``installed``, :data:`AUTO_UNET_OPENVINO` is set and the UNet is real-size (at least
        :data:`BFLOAT16_FROM` parameters, the size it was measured at)."""
        if self.unet_runtime == "openvino":
            return True
        if not (
            self.unet_runtime == "auto"
            and AUTO_UNET_OPENVINO
            and device == "cpu"
            and installed
            and not self.compile
        ):
            return False
        return sum(p.numel() for p in unet.parameters()) >= BFLOAT16_FROM

    def bfloat16_on_cpu(self, unet: Any) -> bool:
        """Whether a pipeline with this UNet runs in bfloat16: on a CPU only, and for ``auto``
        where the CPU has native BF16 and the UNet has :data:`BFLOAT16_FROM` parameters."""
        first = next(unet.parameters(), None)
        if first is None or first.device.type != "cpu" or self.cpu_bfloat16 == "off":
            return False
        if self.cpu_bfloat16 == "on":
            return True
        size = sum(p.numel() for p in unet.parameters())
        return size >= BFLOAT16_FROM and cpu_has_native_bfloat16()

    def apply(self, pipe: Any) -> Any:
        """Set up a freshly loaded pipeline (already on its device) and return it."""
        import torch
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        denoiser = pipe.unet
        # 0. bfloat16 on a CPU (CUDA's half precision is chosen at load: models/devices.py's
        #    torch_dtype).
        if self.bfloat16_on_cpu(denoiser):
            pipe.to(dtype=torch.bfloat16)
        # 1. Attention: diffusers picks SDPA by default on torch 2; the baseline undoes that.
        denoiser.set_attn_processor(AttnProcessor2_0() if self.sdpa else AttnProcessor())
        if hasattr(getattr(pipe, "vae", None), "set_attn_processor"):  # AutoencoderTiny: none
            pipe.vae.set_attn_processor(AttnProcessor2_0() if self.sdpa else AttnProcessor())
        # 2. Memory order of the convolution weights.
        if self.channels_last:
            denoiser.to(memory_format=torch.channels_last)
            if getattr(pipe, "vae", None) is not None:
                pipe.vae.to(memory_format=torch.channels_last)
        # 3. Compilation last, over the final module.
        if self.compile:
            pipe.unet = torch.compile(denoiser, dynamic=False)
        return pipe

    def allow_recompiles(self, *, devices: int, models: int) -> None:
        """With ``compile``, let torch keep a compiled UNet for every batch bucket on every
        device for every loaded model. They all share the UNet's one ``forward`` code object,
        whose recompile limit (8 by default) torch would otherwise hit silently, running the
        rest eagerly without an error."""
        if not self.compile:
            return
        import torch._dynamo

        needed = len(BATCH_BUCKETS) * max(devices, 1) * max(models, 1)
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, needed)
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, needed)

    def bucket(self, batch: int) -> int:
        """The batch size a call of ``batch`` images runs at (padded up when compiled)."""
        if not self.compile:
            return batch
        return next((size for size in BATCH_BUCKETS if size >= batch), batch)

    def warm_up_sizes(self, max_batch: int) -> list[int]:
        """Batch sizes to run once before real work: 1 (it loads the model), and with a
        compiled UNet every bucket up to ``max_batch``, since each compiles on first use."""
        if not self.compile:
            return [1]
        return sorted({self.bucket(n) for n in range(1, max_batch + 1)})

    def set_up_vae(self, pipe: Any, batch: int, side: int) -> None:
        """Slicing for a batch this big, tiling for images this large (``side`` px)."""
        vae = getattr(pipe, "vae", None)
        if vae is None:
            return
        if self.vae_slicing_from and batch >= self.vae_slicing_from:
            vae.enable_slicing()
        else:
            vae.disable_slicing()
        if self.vae_tiling_from and side >= self.vae_tiling_from:
            vae.enable_tiling()
        else:
            vae.disable_tiling()


_CHOICES = {
    "decoder": DECODERS,
    "decoder_runtime": DECODER_RUNTIMES,
    "unet_runtime": UNET_RUNTIMES,
    "cpu_bfloat16": ON_OFF_AUTO,
}


def cpu_has_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), from the kernel's
    CPU flags; False where there are none to read (macOS, Windows: bfloat16 stays opt-in)."""
    try:
        with open(cpuinfo, encoding="utf-8") as lines:
            flags = next((line for line in lines if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


_SWITCH = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}
