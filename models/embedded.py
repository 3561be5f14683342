"""The embedded default model: a tiny Stable Diffusion-shaped pipeline built from configs.

It lets the bot, the CLI and the tests run end to end on any machine, offline, in about a second
per batch on a laptop CPU. Its weights are random (seeded, so every build is byte-identical): it
makes coloured noise, not covers, until a trained model ships under a new
:data:`EMBEDDED_VERSION`.

Shape (the layout of SD 1.x, scaled down):

* UNet2DConditionModel, block_out_channels (32, 64, 64), cross-attention in the first two down
  and last two up blocks, sample_size 16 → 128 px images through an 8x VAE;
* AutoencoderKL with four blocks (3 downsamplings → vae_scale_factor 8), 4 latent channels;
* a 2-layer CLIPTextModel (hidden size 64) with a byte-level CLIP tokenizer built in memory
  (256 byte symbols, each also as an end-of-word symbol, no merges), model_max_length 77;
* DPMSolverMultistepScheduler (DPM-Solver++ 2M), which gives clean results at ~20 steps.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

EMBEDDED_VERSION = "tiny-random-v1"
NATIVE_SIZE = 128  # px: unet sample_size 16 x vae_scale_factor 8
INFO_FILE = "playlist_cover.json"

_TEXT_HIDDEN = 64  # the UNet's cross_attention_dim must match the text encoder's width
_MAX_TOKENS = 77  # CLIP's context length; SD pipelines pad every prompt to it
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_SEEDS = {"unet": 0, "vae": 1, "text_encoder": 2}  # one fixed seed per component


def ensure_embedded(cache_dir: Path) -> Path:
    """Return ``cache_dir/models/EMBEDDED_VERSION``, building the model there first if missing.

    Safe for concurrent processes: each builds into its own temporary folder and renames it into
    place; a build that loses the race is discarded (both built the same bytes anyway).
    """
    target = Path(cache_dir) / "models" / EMBEDDED_VERSION
    if (target / INFO_FILE).is_file():
        return target
    try:
        return build_embedded_pipeline(target)
    except FileExistsError:
        return target  # another process finished first


def build_embedded_pipeline(target_dir: Path) -> Path:
    """Build the embedded pipeline and save it (safetensors) into ``target_dir``, atomically.

    Raises :class:`FileExistsError` when ``target_dir`` already exists. Returns ``target_dir``.
    """
    target_dir = Path(target_dir)
    if target_dir.exists():
        raise FileExistsError(f"{target_dir} already exists; remove it to rebuild the model.")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target so the final rename stays on one filesystem (atomic).
    tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}-", dir=target_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared (e.g. a Docker volume)
    try:
        pipe = _build_pipeline()
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / INFO_FILE).write_text(json.dumps(_info(), indent=2) + "\n", encoding="utf-8")
        try:
            tmp.rename(target_dir)
        except OSError:
            if (target_dir / INFO_FILE).is_file():
                raise FileExistsError(f"{target_dir} was built by another process.") from None
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target_dir


def _info() -> dict[str, Any]:
    """What ``playlist_cover.json`` says about this folder, honestly."""
    return {
        "name": "embedded",
        "version": EMBEDDED_VERSION,
        "native_size": NATIVE_SIZE,
        "trained": False,
        "note": (
            "Random (untrained) weights in the shape of a tiny Stable Diffusion. It exercises "
            "the whole generation path offline but makes noise, not covers, until a trained "
            "model ships."
        ),
    }


def _build_pipeline() -> StableDiffusionPipeline:
    """Assemble the pipeline in memory from configs; every component has its own fixed seed."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tokenizer = _build_tokenizer()

    torch.manual_seed(_SEEDS["unet"])
    unet = UNet2DConditionModel(
        sample_size=NATIVE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=_TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
    )

    torch.manual_seed(_SEEDS["vae"])
    vae = AutoencoderKL(
        sample_size=NATIVE_SIZE,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 32, 64, 64),  # 4 blocks → 2**3 = 8x downsampling
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=32,
        scaling_factor=0.18215,
    )

    torch.manual_seed(_SEEDS["text_encoder"])
    text_encoder = _clip_text_encoder(tokenizer, width=_TEXT_HIDDEN, layers=2, heads=4)

    return assemble_pipeline(unet, vae, text_encoder, tokenizer)


def _clip_text_encoder(tokenizer: Any, *, width: int, layers: int, heads: int) -> Any:
    """A CLIP text transformer (quick-GELU, 4x wide MLPs, 77 positions) over ``tokenizer``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=_MAX_TOKENS,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def assemble_pipeline(
    unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any = None
) -> StableDiffusionPipeline:
    """A text-to-image pipeline around the components, without a safety checker. ``scheduler``
    defaults to SD 1.x's noise schedule sampled by DPM-Solver++ 2M (clean results in ~20
    steps). Training's validation renders use it too, with the training scheduler."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    if scheduler is None:
        scheduler = DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="leading",
            steps_offset=1,
        )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_tokenizer() -> Any:
    """A CLIP tokenizer over bare bytes: every byte symbol alone and as end-of-word, no merges.

    Any text encodes (byte-level BPE never needs an unknown token), one token per byte, which is
    plenty for a model that does not read its prompt anyway.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())  # the 256 printable stand-ins for bytes, in fixed order
    tokens = [*symbols, *(s + "</w>" for s in symbols), _BOS, _EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=_MAX_TOKENS)


# -- SD 1.5's architecture with random weights (for benchmarks) -----------------------------

SD15_ARCHITECTURE = "sd15-random"


def build_sd15_architecture(seed: int = 0, device: str = "cpu") -> StableDiffusionPipeline:
    """Stable Diffusion 1.5's shapes – an 860M-parameter UNet (320/640/1280/1280 channels,
    cross-attention width 768), its 8x VAE (128/256/512/512) and a 12-layer, 768-wide CLIP text
    encoder – with random weights, built in memory.

    Speed does not depend on the weights' values, so this measures SD 1.5 without downloading
    it (issue: the GPU benchmark). The tokenizer is the embedded byte tokenizer (a smaller
    vocabulary than CLIP's 49,408 changes only the size of a lookup table). The weights are
    made on ``device`` directly (~4 GB in float32; "meta" makes shapes only, for tests).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tokenizer = _build_tokenizer()
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
        )  # the rest of UNet2DConditionModel's defaults are SD 1.x's
        vae = AutoencoderKL(
            sample_size=512,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            scaling_factor=0.18215,
        )
        text_encoder = _clip_text_encoder(tokenizer, width=768, layers=12, heads=12)
    return assemble_pipeline(unet, vae, text_encoder, tokenizer)
