"""Throughput of seed 003's data pipeline and prompt expansion on this machine.

    python -m training.pipeline_speed [--images 32] [--batch-size 8] [--real-size] [--out FILE]

Times the captioner and the CLIP filter (images/s) and the prompt expander (prompts/s) through
the same code the commands use (:class:`training.caption.Captioner`,
:meth:`eval.clip_score.ClipScorer.cosines`, :class:`models.expand.PromptExpander`):

* **stand-ins** – the models in the Hugging Face cache (``HF_HUB_CACHE``; the stand-ins of
  ``python -m modeltools.standins DIR blip clip magicprompt``, or the real models where cached);
* **real size** (``--real-size``) – the real models' architectures (BLIP base, CLIP ViT-L/14,
  GPT-2 small) built in memory from their configs with random weights: no download, the real
  cost per image. Random weights stop generating at random, so generation is held to a fixed
  length (``--caption-tokens``, ``--expansion-tokens``), about what the real models write.

The first batch of each model is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def sample_images(count: int, size: int = 512, seed: int = 0) -> list[Image.Image]:
    """Cover-sized test images (smooth colour fields with a block), like a scraped cover."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        small = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        x, y = (int(v) for v in rng.integers(0, size // 2, 2))
        image.paste(
            tuple(int(v) for v in rng.integers(0, 255, 3)), (x, y, x + size // 4, y + size // 4)
        )
        images.append(image)
    return images


def time_batches(
    run: Callable[[Sequence[Any]], Any], items: Sequence[Any], batch_size: int
) -> dict[str, Any]:
    """items/s of ``run`` over ``items`` in batches, the first batch (warm-up) not counted."""
    run(items[:batch_size])
    began = time.perf_counter()
    for start in range(0, len(items), batch_size):
        run(items[start : start + batch_size])
    seconds = time.perf_counter() - began
    return {
        "n": len(items),
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "per_second": round(len(items) / seconds, 3),
    }


# -- what is measured -----------------------------------------------------------------------------


def standins(images: list[Image.Image], batch_size: int, prompts: int) -> dict[str, Any]:
    from eval.clip_score import DEFAULT_CLIP_MODEL, load_clip
    from models.expand import load_expander
    from models.support import model_folder
    from training.caption import load_captioner

    captioner = load_captioner(device="cpu")
    clip = load_clip(str(model_folder(DEFAULT_CLIP_MODEL, role="CLIP")))
    assert not isinstance(clip, str), clip
    texts = [f"a cover with colour field {i}" for i in range(len(images))]
    expander = load_expander()
    return {
        "captioning": time_batches(captioner, images, batch_size),
        "clip_filter": time_batches(lambda b: clip.cosines(b, texts[: len(b)]), images, batch_size),
        "expansion": time_batches(
            lambda b: [expander(p, i) for i, p in enumerate(b)],
            [f"playlist {i} playlist cover image" for i in range(prompts)],
            1,
        ),
    }


def real_size(
    images: list[Image.Image],
    batch_size: int,
    prompts: int,
    *,
    caption_tokens: int,
    expansion_tokens: int,
) -> dict[str, Any]:
    import torch
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        CLIPConfig,
        CLIPModel,
        GPT2Config,
        GPT2LMHeadModel,
    )

    from eval.clip_score import ClipScorer
    from models.clip_tokenizer import clip_tokenizer

    torch.manual_seed(0)
    out: dict[str, Any] = {}
    # BLIP base: ViT-B/16 at 384 px and a BERT-base decoder (BlipConfig's defaults are exactly
    # Salesforce/blip-image-captioning-base's shape).
    blip = BlipForConditionalGeneration(BlipConfig(text_config={"num_attention_heads": 12})).eval()
    processor = BlipImageProcessor()  # 384 px, as the real repo's preprocessor_config.json

    def caption(batch: Sequence[Image.Image]) -> Any:
        pixels = processor(images=list(batch), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            return blip.generate(
                pixel_values=pixels,
                max_new_tokens=caption_tokens,
                min_new_tokens=caption_tokens,
                do_sample=False,
            )

    out["captioning"] = {
        **time_batches(caption, images, batch_size),
        "tokens": caption_tokens,
        "parameters": sum(p.numel() for p in blip.parameters()),
    }
    # CLIP ViT-L/14 (openai/clip-vit-large-patch14's shape) with the real tokenizer.
    config = CLIPConfig(
        text_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "projection_dim": 768,
        },
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "projection_dim": 768,
        },
        projection_dim=768,
    )
    clip_model = CLIPModel(config)
    scorer = ClipScorer(clip_model, clip_tokenizer(), name="clip-vit-large-patch14 (random)")
    texts = [f"a cover with colour field {i}, digital art" for i in range(len(images))]
    out["clip_filter"] = {
        **time_batches(lambda b: scorer.cosines(b, texts[: len(b)]), images, batch_size),
        "parameters": sum(p.numel() for p in clip_model.parameters()),
    }
    # GPT-2 small (MagicPrompt's shape): one prompt at a time, as the bot expands them.
    gpt = GPT2LMHeadModel(GPT2Config()).eval()
    prompt = torch.randint(0, 50257, (1, 8))  # ~"<title> playlist cover image"

    def expand(batch: Sequence[int]) -> None:
        for _ in batch:
            with torch.inference_mode():
                gpt.generate(
                    prompt,
                    do_sample=True,
                    top_k=50,
                    max_new_tokens=expansion_tokens,
                    min_new_tokens=expansion_tokens,
                    pad_token_id=50256,
                )

    out["expansion"] = {
        **time_batches(expand, list(range(prompts)), 1),
        "tokens": expansion_tokens,
        "parameters": sum(p.numel() for p in gpt.parameters()),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.pipeline_speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--images", type=int, default=32, help="images per measurement (default 32)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per call (default 8)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts to expand (default 8)")
    parser.add_argument(
        "--real-size", action="store_true", help="also the real architectures, random weights"
    )
    parser.add_argument(
        "--caption-tokens", type=int, default=15, help="real size: tokens per caption (default 15)"
    )
    parser.add_argument(
        "--expansion-tokens",
        type=int,
        default=40,
        help="real size: tokens per expansion (default 40)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.images, args.batch_size, args.prompts) < 1:
        parser.error("--images, --batch-size and --prompts must be at least 1")
    import torch

    from models.registry import quiet_libraries

    quiet_libraries()
    images = sample_images(args.images)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
        "image_size": images[0].size[0],
        "standins": standins(images, args.batch_size, args.prompts),
    }
    if args.real_size:
        results["real_size"] = real_size(
            images,
            args.batch_size,
            args.prompts,
            caption_tokens=args.caption_tokens,
            expansion_tokens=args.expansion_tokens,
        )
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
