"""Stand-ins of the four hub presets' pipelines (sd15, small-sd, sd-turbo, deepfloyd-if): the
real pipeline and component classes, schedulers, tokenizers and weight formats, tiny random
weights (:data:`REAL_REPOS` says where each departs from the real repository)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from models.clip_tokenizer import clip_tokenizer
from models.embedded import SD_BETAS
from models.registry import quiet_libraries
from modeltools.standins.cache import RealRepo, Safety, into_cache

TEXT_WIDTH = 32  # every stand-in's text encoder width = its UNet's cross-attention width


REAL_REPOS: dict[str, tuple[RealRepo, ...]] = {
    "sd15": (
        RealRepo(
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "StableDiffusionPipeline",
            ("fp16",),
            "safetensors",
            (
                "UNet: 2 of SD 1.5's 4 blocks, 32/64 channels (real: 320/640/1280/1280), "
                "attention in the second block only (real: the first three); sample_size 64 "
                "as the real one, so the native size (512 px) is the same",
                "VAE: 4 blocks as the real one (8x), 8/8/16/16 channels (real 128/256/512/512)",
                "text encoder: 2 layers, width 32 (real: 12 layers, 768); the tokenizer is the "
                "real CLIP BPE vocabulary",
                "top-level single-file checkpoints are a few bytes (real: 4-7 GB each)",
            ),
        ),
    ),
    "small-sd": (
        RealRepo(
            "OFA-Sys/small-stable-diffusion-v0",
            "StableDiffusionPipeline",
            (),
            "bin",
            (
                "UNet and VAE shrunk as for sd15; unet sample_size 32 (the registry's 256 px, "
                "the size the playlist-cover paper used)",
                "the real repo names its feature extractor CLIPFeatureExtractor; so does this",
            ),
        ),
    ),
    "sd-turbo": (
        RealRepo(
            "stabilityai/sd-turbo",
            "StableDiffusionPipeline",
            ("fp16",),
            "safetensors",
            (
                "UNet: 2 blocks, 32/64 channels, per-block head dims (real: SD 2.1's 4 blocks, "
                "320-1280 channels, heads 5/10/20/20, cross-attention width 1024)",
                "text encoder: 2 layers, width 32, GELU (real: OpenCLIP ViT-H, 23 layers, 1024)",
            ),
        ),
    ),
    "deepfloyd-if": (
        RealRepo(
            "DeepFloyd/IF-I-XL-v1.0",
            "IFPipeline",
            ("fp16",),
            "safetensors",
            (
                "T5 encoder: 2 layers, d_model 32 (real: T5 v1.1 XXL, 24 layers, 4096); its "
                "spiece.model is trained here on a few sentences (real: 32k pieces)",
                "UNet: 2 blocks, 32/64 channels (real: XL, 4.3B parameters)",
                "gated: the real repository needs an accepted licence and a token",
            ),
        ),
        RealRepo(
            "DeepFloyd/IF-II-L-v1.0",
            "IFSuperResolutionPipeline",
            ("fp16",),
            "safetensors",
            (
                "UNet: 4 blocks, 16-64 channels, attention at 32x32 only (real: L, 1.2B)",
                "ships its own T5 encoder, which our runner never loads (text_encoder=None)",
                "gated, like stage I",
            ),
        ),
    ),
}


def standin_names() -> list[str]:
    return list(REAL_REPOS)


def write_standin(
    name: str, hub_cache: Path, *, safety: Safety = "pass", seed: int = 0
) -> list[Path]:
    """Write the stand-in of preset ``name`` into the hub cache ``hub_cache`` (the folder that
    holds ``models--ORG--NAME``); returns its snapshot folders, one per repository (two for IF).
    An existing stand-in of the same repository is replaced."""
    if name not in REAL_REPOS:
        raise ValueError(f"No stand-in for {name!r}; there are {', '.join(REAL_REPOS)}.")
    builders: dict[str, Callable[..., list[Any]]] = {
        "sd15": _sd15,
        "small-sd": _small_sd,
        "sd-turbo": _sd_turbo,
        "deepfloyd-if": _deepfloyd_if,
    }
    quiet_libraries()  # "Writing model shards" for every component, dtype notices
    pipelines = builders[name](safety=safety, seed=seed)
    snapshots = []
    for repo, pipe in zip(REAL_REPOS[name], pipelines, strict=True):
        with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
            files = Path(tmp)
            pipe.save_pretrained(files, safe_serialization=repo.weights == "safetensors")
            for variant in repo.variants:
                pipe.to(_half()).save_pretrained(files, variant=variant)
                pipe.to(_float())
            _finish_files(name, repo, files)
            snapshots.append(into_cache(files, Path(hub_cache), repo.repo_id))
    return snapshots


def _finish_files(name: str, repo: RealRepo, files: Path) -> None:
    """What save_pretrained does not write the way the real repository has it."""
    if name == "sd15":
        # The real repo's top level holds single-file checkpoints (several GB each) and every
        # component also as .bin: a download of what the pipeline needs must skip them all.
        for extra in ("v1-5-pruned.safetensors", "v1-5-pruned-emaonly.ckpt"):
            (files / extra).write_bytes(b"stand-in for a multi-GB single-file checkpoint")
        for weights in list(files.glob("*/*.safetensors")):
            (weights.with_suffix(".bin")).write_bytes(b"stand-in for a .bin copy")
    if name == "small-sd":
        # transformers 5 writes CLIPImageProcessor; the real repo (2022) names the old class.
        index = json.loads((files / "model_index.json").read_text())
        index["feature_extractor"] = ["transformers", "CLIPFeatureExtractor"]
        (files / "model_index.json").write_text(json.dumps(index, indent=2))
        config_path = files / "feature_extractor" / "preprocessor_config.json"
        config = json.loads(config_path.read_text())
        config["feature_extractor_type"] = "CLIPFeatureExtractor"
        config.pop("image_processor_type", None)
        config_path.write_text(json.dumps(config, indent=2))
    if name == "small-sd":
        # transformers 5 saves safetensors whatever it is asked; the real repo has .bin files.
        import torch
        from safetensors.torch import load_file

        for weights in list(files.glob("*/model.safetensors")):
            torch.save(load_file(weights), weights.with_name("pytorch_model.bin"))
            weights.unlink()
    if name == "deepfloyd-if":
        # The real repos ship the SentencePiece model only: no tokenizer.json, which would let
        # transformers skip sentencepiece where the real download cannot.
        (files / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
        (files / "tokenizer" / "spiece.model").write_bytes(_spiece_model())
    (files / "README.md").write_text(
        f"Stand-in for {repo.repo_id}, written by playlist-cover's modeltools/standins/: the real "
        "classes and layout, tiny random weights.\n"
    )


def _half() -> Any:
    import torch

    return torch.float16


def _float() -> Any:
    import torch

    return torch.float32


# -- Stable Diffusion 1.x / 2.x ---------------------------------------------------------------


def _sd_unet(sample_size: int, *, turbo: bool = False) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Attention one level down from the top: SD runs it at the full latent size too, but
        # 4,096-token attention makes a CPU test take minutes, and our code reads no block type.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=(2, 4) if turbo else 8,  # SD 2.x: heads per block; SD 1.x: one size
        use_linear_projection=turbo,
        norm_num_groups=16,
    )


def _sd_vae(native_size: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=native_size,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),  # 4 blocks → 8x, as SD's own VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        scaling_factor=0.18215,
    )


def _clip_text(tokenizer: Any, *, act: str = "quick_gelu") -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=4 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act=act,
            projection_dim=TEXT_WIDTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def _clip_config() -> Any:
    """A tiny CLIP (both towers) for the safety checkers; 32 px images, 8 px patches."""
    from transformers import CLIPConfig

    tower = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
    }
    return CLIPConfig(
        text_config={
            **tower,
            "vocab_size": 1000,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )


def _feature_extractor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _sd_safety_checker(safety: Safety) -> Any:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    checker = StableDiffusionSafetyChecker(_clip_config())
    if safety == "flag-all":
        # A concept "matches" when cosine − weight > 0; a weight of −10 matches everything.
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-10.0)
            checker.special_care_embeds_weights.fill_(-10.0)
    return checker


def _sd_pipeline(
    *, native_size: int, scheduler: Any, safety: Safety | None, seed: int, turbo: bool = False
) -> Any:
    import torch
    from diffusers import StableDiffusionPipeline

    tokenizer = clip_tokenizer()
    if turbo:  # SD 2.x's OpenCLIP tokenizer pads with "!" (id 0), not with <|endoftext|>
        tokenizer.pad_token = "!"
    torch.manual_seed(seed)
    return StableDiffusionPipeline(
        vae=_sd_vae(native_size),
        text_encoder=_clip_text(tokenizer, act="gelu" if turbo else "quick_gelu"),
        tokenizer=tokenizer,
        unet=_sd_unet(native_size // 8, turbo=turbo),
        scheduler=scheduler,
        safety_checker=_sd_safety_checker(safety) if safety else None,
        feature_extractor=_feature_extractor() if safety else None,
        requires_safety_checker=safety is not None,
    )


def _sd1_scheduler() -> Any:
    from diffusers import PNDMScheduler

    # SD 1.x's scheduler config as its repos ship it.
    return PNDMScheduler(
        **SD_BETAS,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _sd15(*, safety: Safety, seed: int) -> list[Any]:
    return [_sd_pipeline(native_size=512, scheduler=_sd1_scheduler(), safety=safety, seed=seed)]


def _small_sd(*, safety: Safety, seed: int) -> list[Any]:
    return [_sd_pipeline(native_size=256, scheduler=_sd1_scheduler(), safety=safety, seed=seed)]


def _sd_turbo(*, safety: Safety, seed: int) -> list[Any]:
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(
        **SD_BETAS,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    # sd-turbo ships without a safety checker; ``safety`` has nothing to act on.
    return [_sd_pipeline(native_size=512, scheduler=scheduler, safety=None, seed=seed, turbo=True)]


# -- DeepFloyd IF -----------------------------------------------------------------------------

_T5_CORPUS = (
    "a playlist cover image of a late night drive through neon city lights",
    "sunday morning jazz with coffee and soft warm light in the kitchen",
    "gym hype workout energy, bold red shapes, loud and bright",
    "the last day of summer, a beach at sunset, waves and gold sky",
    "minimal abstract poster art with geometric forms and grain",
)


@lru_cache(maxsize=1)
def _spiece_model() -> bytes:
    """A SentencePiece unigram model trained here on a few sentences (the real one's kind and
    special ids: pad 0, eos 1, unk 2, no bos). Deterministic for a given corpus."""
    import sentencepiece

    with tempfile.TemporaryDirectory(prefix="spiece-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(_T5_CORPUS * 4) + "\n")
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "spiece"),
            vocab_size=64,
            hard_vocab_limit=False,
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            num_threads=1,
            minloglevel=2,
        )
        return (Path(tmp) / "spiece.model").read_bytes()


def _t5_tokenizer() -> Any:
    """T5's tokenizer over :func:`_spiece_model`, with T5's 100 sentinel ids, 77 tokens as IF
    uses."""
    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory(prefix="spiece-") as tmp:
        model = Path(tmp) / "spiece.model"
        model.write_bytes(_spiece_model())
        return T5Tokenizer(vocab_file=str(model), extra_ids=100, model_max_length=77, legacy=True)


def _t5_encoder(tokenizer: Any) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_WIDTH,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",  # T5 v1.1, as IF's encoder
            is_encoder_decoder=False,
        )
    )


def _if_safety_checker(safety: Safety) -> Any:
    import torch
    from diffusers.pipelines.deepfloyd_if.safety_checker import IFSafetyChecker

    checker = IFSafetyChecker(_clip_config())
    # Random heads would flag about half the images; make the verdict deterministic.
    with torch.no_grad():
        for head in (checker.p_head, checker.w_head):
            head.weight.zero_()
            head.bias.fill_(10.0 if safety == "flag-all" and head is checker.p_head else -10.0)
    return checker


def _if_scheduler() -> Any:
    from diffusers import DDPMScheduler

    # IF's pixel-space schedule: cosine betas, learned variance, dynamic thresholding.
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        prediction_type="epsilon",
    )


def _if_unet(*, stage: int) -> Any:
    from diffusers import UNet2DConditionModel

    common = {
        "layers_per_block": 1,
        "out_channels": 6,  # learned variance: ε and the interpolation weights
        "cross_attention_dim": TEXT_WIDTH,
        "encoder_hid_dim": TEXT_WIDTH,
        "encoder_hid_dim_type": "text_proj",
        "attention_head_dim": 8,
        "addition_embed_type": "text",
        "addition_embed_type_num_heads": 2,
        "cross_attention_norm": "group_norm",
        "resnet_time_scale_shift": "scale_shift",
        "act_fn": "gelu",
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "norm_num_groups": 8,
    }
    if stage == 1:
        return UNet2DConditionModel(
            sample_size=64,
            in_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            **common,
        )
    # Stage II sees the noisy 256 px image and the upscaled 64 px one (6 channels); attention
    # only at the lowest resolution, as the real one (full attention at 256 px would take
    # minutes on a CPU).
    return UNet2DConditionModel(
        sample_size=256,
        in_channels=6,
        block_out_channels=(16, 32, 32, 64),
        down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("SimpleCrossAttnDownBlock2D",),
        up_block_types=("SimpleCrossAttnUpBlock2D",) + ("ResnetUpsampleBlock2D",) * 3,
        class_embed_type="timestep",  # the noise level of the upscaled 64 px image
        mid_block_scale_factor=1.414,
        time_embedding_act_fn="gelu",
        **common,
    )


def _deepfloyd_if(*, safety: Safety, seed: int) -> list[Any]:
    import torch
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline
    from diffusers.pipelines.deepfloyd_if.watermark import IFWatermarker

    tokenizer = _t5_tokenizer()
    torch.manual_seed(seed)
    stage1 = IFPipeline(
        tokenizer=tokenizer,
        text_encoder=_t5_encoder(tokenizer),
        unet=_if_unet(stage=1),
        scheduler=_if_scheduler(),
        safety_checker=_if_safety_checker(safety),
        feature_extractor=_feature_extractor(),
        watermarker=IFWatermarker(),
        requires_safety_checker=True,
    )
    stage2 = IFSuperResolutionPipeline(
        tokenizer=tokenizer,
        text_encoder=_t5_encoder(tokenizer),
        unet=_if_unet(stage=2),
        scheduler=_if_scheduler(),
        image_noising_scheduler=DDPMScheduler(
            num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"
        ),
        safety_checker=_if_safety_checker(safety),
        feature_extractor=_feature_extractor(),
        watermarker=IFWatermarker(),
        requires_safety_checker=True,
    )
    return [stage1, stage2]
