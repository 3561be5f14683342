"""The embedded default model: a tiny Stable Diffusion trained here, on synthetic covers.

It lets the bot, the CLI and the tests run end to end on any machine, offline, in about a
second per image on a laptop CPU. Its weights ship inside the package (``assets/embedded/``,
float16, ~9 MB): ``python -m training.converge`` trained them from scratch on one CPU core – a
VAE, then the UNet and text encoder on a generic shapes-and-colours domain, then on synthetic
playlist covers, the snapshot chosen on the validation split (``docs/embedded.md``). It paints
the genre's palette and, at about half the rules' own rate, the layout an activity word calls
for (a horizon for a morning, bands for a workout); its shapes are still soft.

Shape (the layout of SD 1.x, scaled down):

* UNet2DConditionModel, block_out_channels (32, 64, 64), cross-attention in the first two down
  and last two up blocks, sample_size 16 → 128 px images through an 8x VAE;
* AutoencoderKL with four blocks (32, 64, 64, 64; 3 downsamplings → vae_scale_factor 8), 4
  latent channels (:data:`VAE_BLOCKS`; the miniature study keeps the 64 px, 4x one);
* a 2-layer CLIPTextModel (width 32) over OpenAI CLIP's real 49,408-token BPE vocabulary
  (:mod:`models.clip_tokenizer`), model_max_length 77;
* a zero-terminal-SNR, v-prediction noise schedule sampled by DPM-Solver++ 2M in ~20 steps
  (:func:`embedded_scheduler` says why).

On first use the packaged weights are written out as an ordinary float32 diffusers folder in the
project cache (:func:`ensure_embedded`), which the registry then loads like any local model.
A checkout without packaged weights (while a new model is being trained) gets the same
architecture with seeded random weights instead, and says so in ``playlist_cover.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.clip_tokenizer import clip_tokenizer

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

PACKAGED = Path(__file__).parent / "assets" / "embedded"
EMBEDDED_VERSION = "covers-mini-v4"
NATIVE_SIZE = 128  # px: unet sample_size 16 x vae_scale_factor 8
INFO_FILE = "playlist_cover.json"
WEIGHTS_FILE = "weights.fp16.safetensors"  # per component, in PACKAGED
COMPONENTS = ("unet", "vae", "text_encoder")

TEXT_WIDTH = 32  # the UNet's cross_attention_dim must match the text encoder's width
_SEEDS = {"unet": 0, "vae": 1, "text_encoder": 2}  # one fixed seed per component
# Stable Diffusion's training noise schedule (SD 1.x and 2.x alike), as their scheduler configs say.
SD_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def ensure_embedded(cache_dir: Path) -> Path:
    """Return ``cache_dir/models/EMBEDDED_VERSION``, writing the model there first if missing.

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


def build_embedded_pipeline(target_dir: Path, *, package: Path = PACKAGED) -> Path:
    """Write the embedded pipeline (float32 safetensors) into ``target_dir``, atomically: the
    trained weights packaged in ``package``, or seeded random ones when it has none.

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
        info = packaged_info(package)
        if info is not None:
            pipe = from_package(package)
        else:
            pipe, info = build_architecture(), _untrained_info()
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
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


def packaged_info(package: Path = PACKAGED) -> dict[str, Any] | None:
    """What ``package/playlist_cover.json`` says, or None when no weights are packaged there."""
    info = package / INFO_FILE
    if not info.is_file() or not all((package / c / WEIGHTS_FILE).is_file() for c in COMPONENTS):
        return None
    return json.loads(info.read_text(encoding="utf-8"))


def _untrained_info() -> dict[str, Any]:
    return {
        "name": "embedded",
        "version": EMBEDDED_VERSION,
        "native_size": NATIVE_SIZE,
        "trained": False,
        "note": (
            "Random (untrained) weights in the embedded model's shape: this checkout ships no "
            "trained weights in models/assets/embedded/. It exercises the generation path but "
            "makes noise; run `python -m training miniature --ship` to train them."
        ),
    }


# The VAE per native size. The UNet always works on a 16x16 latent, so a bigger native size
# costs the UNet nothing: one more VAE block doubles the side instead. At 128 px the VAE is
# wider too (32 channels at full resolution, not 16), because its decoder draws every edge.
VAE_BLOCKS: dict[int, tuple[int, ...]] = {64: (16, 32, 64), 128: (32, 64, 64, 64)}


def build_architecture(seed: int = 0, native_size: int = NATIVE_SIZE) -> StableDiffusionPipeline:
    """The embedded model's architecture with seeded random weights (what training starts
    from); every component has its own seed derived from ``seed``. ``native_size`` picks the
    VAE (:data:`VAE_BLOCKS`); the UNet and the text encoder are the same at every size."""
    if native_size not in VAE_BLOCKS:
        raise ValueError(f"native_size must be one of {sorted(VAE_BLOCKS)}, got {native_size}.")
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tokenizer = clip_tokenizer()

    torch.manual_seed(seed * 10 + _SEEDS["unet"])
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )

    torch.manual_seed(seed * 10 + _SEEDS["vae"])
    blocks = VAE_BLOCKS[native_size]  # n blocks → 2**(n-1) x downsampling
    vae = AutoencoderKL(
        sample_size=native_size,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=blocks,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        layers_per_block=1,
        norm_num_groups=8,
        scaling_factor=1.0,  # training measures the latents' spread and sets it
    )

    torch.manual_seed(seed * 10 + _SEEDS["text_encoder"])
    text_encoder = clip_text_encoder(tokenizer, width=TEXT_WIDTH, layers=2, heads=4)

    return assemble_pipeline(unet, vae, text_encoder, tokenizer, embedded_scheduler())


def embedded_scheduler() -> Any:
    """SD 1.x's betas rescaled to zero terminal SNR, v-prediction, "trailing" timesteps, sampled
    by DPM-Solver++ 2M (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed").

    Why not SD's own schedule: its last step keeps √ᾱ_T ≈ 0.07 of the image. On a 16x16 latent
    the average colour then still shows through the noise at nearly every training step, so the
    network learns to copy it from its input instead of reading it from the prompt – and at
    sampling time, starting from pure noise, it has nothing to copy and paints the same colour
    fields whatever the words. With zero terminal SNR the last steps carry no image at all, and
    v-prediction keeps their loss meaningful; measured in docs/miniature.md.
    """
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        **SD_BETAS,
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        algorithm_type="dpmsolver++",
        solver_order=2,
    )


def export_to_package(
    pipe: StableDiffusionPipeline, info: dict[str, Any], folder: Path = PACKAGED
) -> int:
    """Write ``pipe``'s weights (float16) and configs into ``folder`` for shipping; returns the
    bytes written. The tokenizer is not written: it is rebuilt from the bundled vocabulary."""
    from safetensors.torch import save_file

    folder = Path(folder)
    for component in COMPONENTS:
        model = getattr(pipe, component)
        part = folder / component
        part.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").half().contiguous() for k, v in model.state_dict().items()}
        save_file(state, part / WEIGHTS_FILE)
        config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
        config.pop("_name_or_path", None)  # where it was loaded from: a path on this machine
        (part / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    pipe.scheduler.save_config(folder / "scheduler")
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def from_package(package: Path) -> StableDiffusionPipeline:
    """The model packaged in ``package``, in float32, assembled in memory."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    def read(component: str) -> tuple[dict[str, Any], dict[str, Any]]:
        config = json.loads((package / component / "config.json").read_text(encoding="utf-8"))
        weights = load_file(package / component / WEIGHTS_FILE)
        return config, {k: v.to(torch.float32) for k, v in weights.items()}

    config, weights = read("unet")
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(weights)
    config, weights = read("vae")
    vae = AutoencoderKL.from_config(config)
    vae.load_state_dict(weights)
    config, weights = read("text_encoder")
    text_encoder = CLIPTextModel(CLIPTextConfig(**config))
    text_encoder.load_state_dict(weights)
    scheduler = DPMSolverMultistepScheduler.from_pretrained(package / "scheduler")
    return assemble_pipeline(unet, vae, text_encoder, clip_tokenizer(), scheduler)


def clip_text_encoder(
    tokenizer: Any, *, width: int, layers: int, heads: int, act: str = "quick_gelu"
) -> Any:
    """A CLIP text transformer (``act``, 4x wide MLPs, 77 positions) over ``tokenizer``:
    OpenAI's CLIP uses quick-GELU, OpenCLIP (SD 2.x, sd-turbo) exact GELU."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            hidden_act=act,
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
            **SD_BETAS,
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


# -- SD 1.5's architecture with random weights (for benchmarks) -----------------------------

SD15_ARCHITECTURE = "sd15-random"


def build_sd15_architecture(seed: int = 0, device: str = "cpu") -> StableDiffusionPipeline:
    """Stable Diffusion 1.5's shapes – an 860M-parameter UNet (320/640/1280/1280 channels,
    cross-attention width 768), its 8x VAE (128/256/512/512) and a 12-layer, 768-wide CLIP text
    encoder – with random weights, built in memory.

    Speed does not depend on the weights' values, so this measures SD 1.5 without downloading
    it (issue: the GPU benchmark). The tokenizer is CLIP's own (:mod:`models.clip_tokenizer`),
    so prompts cost as many tokens as on the real model. The weights are
    made on ``device`` directly (~4 GB in float32; "meta" makes shapes only, for tests).
    """
    import torch
    from diffusers import UNet2DConditionModel

    tokenizer = clip_tokenizer()
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
        )  # the rest of UNet2DConditionModel's defaults are SD 1.x's
        vae = sd_vae_architecture()
        text_encoder = clip_text_encoder(tokenizer, width=768, layers=12, heads=12)
    return assemble_pipeline(unet, vae, text_encoder, tokenizer)


SD_TURBO_ARCHITECTURE = "sd-turbo-random"


def build_sd_turbo_architecture(seed: int = 0, device: str = "cpu") -> StableDiffusionPipeline:
    """sd-turbo's shapes (SD 2.1's) with random weights, built in memory: an 865M UNet
    (320/640/1280/1280 channels, per-block head dims 5/10/20/20, linear attention projections,
    cross-attention width 1024), SD's 8x VAE, and OpenCLIP ViT-H's text tower (23 layers,
    1024 wide, 16 heads, GELU), with Euler on trailing timesteps as the real scheduler.

    What :func:`build_sd15_architecture` is for SD 1.5: real CPU timings without a download
    (issue 22). The tokenizer is CLIP's BPE; sd-turbo's pads with ``!`` but costs the same."""
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    tokenizer = clip_tokenizer()
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
        )
        vae = sd_vae_architecture()
        text_encoder = clip_text_encoder(tokenizer, width=1024, layers=23, heads=16, act="gelu")
    scheduler = EulerDiscreteScheduler(
        **SD_BETAS, prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1
    )
    return assemble_pipeline(unet, vae, text_encoder, tokenizer, scheduler)


def sd_vae_architecture() -> Any:
    """SD 1.x/2.x's 8x KL autoencoder (128/256/512/512 channels, 83M parameters)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        scaling_factor=0.18215,
    )


def build_tiny_decoder_architecture(seed: int = 0, device: str = "cpu") -> Any:
    """TAESD's shapes (``madebyollin/taesd``: diffusers' ``AutoencoderTiny`` defaults – 64
    channels throughout, 1/3/3/3 encoder and 3/3/3/1 decoder blocks, 2.4M parameters) with
    random weights: it decodes SD 1.x/2.x latents, so it times the fast decoder of both
    ``*-random`` presets.

    Its last convolution is lifted to mid-grey and scaled up: left as initialised, it outputs
    0.015 ± 0.016, which AutoencoderTiny maps from [0, 1] to [-1, 1] as -0.97 – near-black
    murk (mean ~4/255) that the black check rejects as a blocked image. Bias 0.5 and 12x the
    weights give grey noise (mean ~100/255, sd ~40), what the presets promise; the values do not
    change the speed."""
    import torch
    from diffusers import AutoencoderTiny

    with torch.device(device):
        torch.manual_seed(seed)
        tiny = AutoencoderTiny()
    last = tiny.decoder.layers[-1]  # Conv2d(64, 3): the image, in [0, 1] before the mapping
    with torch.no_grad():
        last.weight.mul_(12.0)
        last.bias.fill_(0.5)
    return tiny
