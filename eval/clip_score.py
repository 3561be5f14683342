"""CLIP score: how well an image matches its prompt (Hessel et al., 2021, *CLIPScore*).

    CLIPScore(I, T) = 100 · max(cos(E_I, E_T), 0)

with E_I, E_T CLIP's projected image and text embeddings; a study reports the mean over images.
This is the definition torchmetrics' ``CLIPScore`` uses (its default model is
``openai/clip-vit-large-patch14``, ours too), so numbers compare when the model is the same.

No wheel ships CLIP weights and the hub is off by default, so the weights must already be in
the Hugging Face cache (``hf download openai/clip-vit-large-patch14``) or in a local folder.
When they are not, :func:`load_clip` returns the reason and the study reports the score as
skipped instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
# CLIP's preprocessing constants (Radford et al., 2021; the values in every CLIP config).
_CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
_CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


class ClipScorer:
    """CLIP score of images against prompts with a loaded ``CLIPModel`` and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.image_size = int(model.config.vision_config.image_size)
        self.max_tokens = int(model.config.text_config.max_position_embeddings)

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        """One score per (image, prompt) pair, in [0, 100]."""
        return 100.0 * np.clip(self.cosines(images, prompts), 0.0, None)

    def cosines(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        """The raw cosine similarity of each (image, prompt) pair, in [-1, 1]: what
        ``python -m training clip-filter`` thresholds (seed 003 dropped pairs under 0.2)."""
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts.")
        pixels = torch.from_numpy(np.stack([self._preprocess(i) for i in images]))  # (B,3,S,S)
        tokens = self.tokenizer(
            list(prompts),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        with torch.inference_mode():
            image_embeds = self.model.get_image_features(pixel_values=pixels.to(self.device))
            text_embeds = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        image_embeds = _as_tensor(image_embeds)
        text_embeds = _as_tensor(text_embeds)
        cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds, dim=-1)
        return cosine.double().cpu().numpy()

    def _preprocess(self, image: Image.Image) -> np.ndarray:
        """CLIP's preprocessing: bicubic resize of the short side, centre crop, normalise."""
        size = self.image_size
        image = image.convert("RGB")
        scale = size / min(image.size)
        width = max(size, round(image.width * scale))
        height = max(size, round(image.height * scale))
        image = image.resize((width, height), resample=Image.Resampling.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.float32) / 255.0  # (S, S, 3)
        return ((array - _CLIP_MEAN) / _CLIP_STD).transpose(2, 0, 1)  # (3, S, S)


def _as_tensor(output: Any) -> Any:
    """transformers 5 may return a model output instead of a bare tensor."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output


def load_clip(name: str, *, device: str = "cpu", allow_downloads: bool = False) -> ClipScorer | str:
    """A :class:`ClipScorer` for ``name`` (a hub id in the local cache, or a folder), or a
    sentence saying why there is none."""
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError:
        return "transformers is not installed (pip install -e '.[eval]' in the project's checkout)"
    from models.registry import hf_cache_dir

    # The cache as the environment says now (huggingface_hub reads HF_HUB_CACHE once, at import).
    where = {"local_files_only": not allow_downloads, "cache_dir": hf_cache_dir()}
    try:
        model = CLIPModel.from_pretrained(name, **where)
        tokenizer = AutoTokenizer.from_pretrained(name, **where)
    except (OSError, ValueError) as error:
        log.info("CLIP model %s unavailable: %s", name, error)
        from models.support import fetch_hint

        return f"CLIP weights {name!r} are not available locally ({fetch_hint(name)}, or pass --clip-model DIR)"
    return ClipScorer(model, tokenizer, name=name, device=device)
