"""The catalogue as plain data: the image-model presets, what a resolved model looks like, and
the support models. Nothing here reads the disk, the environment or torch.

    PRESETS / SUPPORT_MODELS (this file)
        ─► models/hub.py: what of them is in the Hugging Face cache, and fetching it
        ─► models/registry.py: a name (preset, ``auto``, folder) resolved to a ModelSpec
        ─► models/loading.py: a ModelSpec loaded onto a device (models/devices.py picks it)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.embedded import NATIVE_SIZE as EMBEDDED_NATIVE_SIZE

Kind = Literal["sd", "if"]


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


# -- the support models ------------------------------------------------------------------------
# Hub models that are not image generators but serve the data pipeline and the prompts – a
# captioner, CLIP, a prompt expander (seed 003's three helpers; docs/training.md); their folders
# are found by models/support.py.


@dataclass(frozen=True)
class SupportModel:
    name: str  # what `python -m bot models pull NAME` takes
    repo_id: str
    role: str  # what it does for us, in words for messages
    model_class: str  # the transformers class that loads it
    weights: str  # "safetensors" or "bin": the format the real repository ships


SUPPORT_MODELS: dict[str, SupportModel] = {
    # BLIP (Li et al. 2022) base, trained on COCO captions: short literal captions ("a painting
    # of a woman in a red dress"), the kind the SD text encoder understands; 224M parameters.
    "blip": SupportModel(
        "blip",
        "Salesforce/blip-image-captioning-base",
        "captioning",
        "BlipForConditionalGeneration",
        "safetensors",
    ),
    # The CLIP that eval's CLIP score already uses (eval/clip_score.py): one model for the
    # filter and the score keeps their numbers comparable.
    "clip": SupportModel(
        "clip", "openai/clip-vit-large-patch14", "CLIP similarity", "CLIPModel", "safetensors"
    ),
    # GPT-2 fine-tuned on ~80k Stable Diffusion prompts: the public equivalent of seed 003's
    # expander (docs/facts.md).
    "magicprompt": SupportModel(
        "magicprompt",
        "Gustavosta/MagicPrompt-Stable-Diffusion",
        "prompt expansion",
        "GPT2LMHeadModel",
        "bin",
    ),
}
_BY_REPO = {model.repo_id: model for model in SUPPORT_MODELS.values()}


def support_model(name: str) -> SupportModel | None:
    """The support model called ``name`` (short name or hub id), or None."""
    return SUPPORT_MODELS.get(name) or _BY_REPO.get(name)
