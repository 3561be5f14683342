"""Stand-ins of the support models (models/support.py: the captioner, CLIP, the prompt
expander) and of the tiny decoder (TAESD), each a transformers or diffusers model repository
with everything at its top level."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from models.clip_tokenizer import clip_tokenizer, vocabulary
from models.registry import quiet_libraries
from modeltools.standins.cache import RealRepo, into_cache

# -- the support models: captioner, CLIP, prompt expander (models/support.py) -----------------

SUPPORT_REPOS: dict[str, RealRepo] = {
    "blip": RealRepo(
        "Salesforce/blip-image-captioning-base",
        "BlipForConditionalGeneration",
        (),
        "safetensors",
        (
            "vision tower: 2 layers, width 32 (real: ViT-B/16, 12 layers, 768); 384 px images "
            "in 16 px patches as the real one, so the preprocessing is the same",
            "text decoder: 2 layers, width 32 (real: BERT-base, 12 layers, 768)",
            "tokenizer: BERT WordPiece with BLIP's [DEC] start token and [ENC], over a few "
            "hundred words (real: bert-base-uncased's 30,522 plus those two)",
        ),
    ),
    "clip": RealRepo(
        "openai/clip-vit-large-patch14",
        "CLIPModel",
        (),
        "safetensors",
        (
            "vision tower: 2 layers, width 32 (real: ViT-L/14, 24 layers, 1024); 224 px in "
            "14 px patches as the real one",
            "text tower: 2 layers, width 32 (real: 12 layers, 768); projection 16 (real 768); "
            "the tokenizer is the real CLIP BPE vocabulary (models/clip_tokenizer.py)",
        ),
    ),
    "magicprompt": RealRepo(
        "Gustavosta/MagicPrompt-Stable-Diffusion",
        "GPT2LMHeadModel",
        (),
        "bin",
        (
            "GPT-2: 2 layers, width 32 (real: GPT-2 small, 12 layers, 768); 1024 positions as "
            "the real one",
            "tokenizer: GPT-2's byte-level BPE kind, trained here on a few prompts with the "
            "tokenizers library, a few hundred tokens (real: GPT-2's 50,257)",
            "weights as pytorch_model.bin plus a training_args.bin a download must skip, as "
            "the real repository was uploaded (from memory of its file list, not checked "
            "offline)",
        ),
    ),
}

# The tiny autoencoder (a preset's ``tiny_decoder``, models/presets.py): a diffusers model
# repository, config and weights at the top level, as madebyollin/taesd is.
TINY_DECODER_REPO = RealRepo(
    "madebyollin/taesd",
    "AutoencoderTiny",
    (),
    "safetensors",
    (
        "8 channels per block (real: 64), 1/1/1/1 encoder and decoder blocks (real: 1/3/3/3 "
        "and 3/3/3/1); the same 8x upsampling, 4 latent channels and scaling factor 1.0",
        "the real repository also carries the original taesd_*.pth files; a diffusers load "
        "never reads them",
    ),
)


def write_tiny_decoder_standin(hub_cache: Path, *, seed: int = 0) -> Path:
    """Write the tiny decoder's stand-in (:data:`TINY_DECODER_REPO`) into the hub cache
    ``hub_cache``; returns its snapshot folder. Replaces an existing one."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
        files = Path(tmp)
        tiny.save_pretrained(files)
        (files / "README.md").write_text(
            f"Stand-in for {TINY_DECODER_REPO.repo_id}, written by playlist-cover's "
            "modeltools/standins/: the real class and layout, tiny random weights.\n"
        )
        return into_cache(files, Path(hub_cache), TINY_DECODER_REPO.repo_id)


# Words for the stand-in tokenizers: what covers and SD prompts are made of. The stand-ins
# sample from these at random, so their captions and expansions are word salad of real words.
_PROMPT_WORDS = (
    "a an the of and with in on at by under over near from painting photo portrait poster "
    "illustration drawing cover album playlist art digital oil watercolor sketch render city "
    "night sky sunset sunrise sea beach forest mountain road car rain neon light lights glow "
    "woman man girl boy cat dog bird flower flowers tree trees house street room window "
    "red blue green yellow pink purple orange black white gold silver dark bright soft warm "
    "cold vibrant pastel retro vintage modern abstract minimal geometric surreal cinematic "
    "highly detailed intricate elegant beautiful dramatic moody epic cozy dreamy sharp focus "
    "trending artstation octane unreal engine concept smooth matte studio lighting volumetric "
    "4k 8k hd style colors texture shapes pattern background sitting standing riding holding "
    "large small old young two three people group music guitar piano headphones crowd stage"
)
_GPT2_CORPUS = (
    "a cat sitting on a window at night, digital art, trending on artstation, highly detailed",
    "portrait of a woman in a red dress, oil painting, dramatic lighting, intricate, elegant",
    "a city street in the rain, neon lights, cinematic, octane render, 8k, sharp focus",
    "a beach at sunset, warm colors, watercolor, soft light, dreamy, concept art",
    "an album cover with abstract geometric shapes, vibrant colors, minimal, poster art",
)


def write_support_standin(name: str, hub_cache: Path, *, seed: int = 0) -> Path:
    """Write the stand-in of support model ``name`` (``blip``, ``clip``, ``magicprompt``) into
    the hub cache ``hub_cache``; returns its snapshot folder. Replaces an existing one."""
    if name not in SUPPORT_REPOS:
        raise ValueError(f"No stand-in for {name!r}; there are {', '.join(SUPPORT_REPOS)}.")
    import torch

    quiet_libraries()
    repo = SUPPORT_REPOS[name]
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
        files = Path(tmp)
        {"blip": _blip, "clip": _clip, "magicprompt": _magicprompt}[name](files)
        if repo.weights == "bin":
            from safetensors.torch import load_file

            # transformers 5 saves safetensors whatever it is asked; the real repo has .bin.
            weights = files / "model.safetensors"
            torch.save(load_file(weights), files / "pytorch_model.bin")
            weights.unlink()
        (files / "README.md").write_text(
            f"Stand-in for {repo.repo_id}, written by playlist-cover's modeltools/standins/: the "
            "real classes and layout, tiny random weights.\n"
        )
        return into_cache(files, Path(hub_cache), repo.repo_id)


def _word_vocab(specials: tuple[str, ...]) -> dict[str, int]:
    words = sorted(set(_PROMPT_WORDS.split()))
    suffixes = ["##s", "##ed", "##ing", "##er", "##ly"]  # WordPiece continuations
    marks = [",", ".", "-", "'"]
    return {token: i for i, token in enumerate([*specials, *marks, *words, *suffixes])}


def _blip(files: Path) -> None:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    # BERT's special tokens in BERT's order (pad 0), then BLIP's decoder start [DEC] and [ENC].
    vocab = _word_vocab(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"))
    tokenizer = BertTokenizer(
        vocab=vocab, bos_token="[DEC]", additional_special_tokens=["[ENC]"], model_max_length=512
    )
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    config = BlipConfig(
        text_config={
            **text,
            "vocab_size": len(vocab),
            "encoder_hidden_size": 32,  # = the vision width: cross-attention reads its output
            "initializer_range": 0.2,  # (real 0.02) so the image outweighs the decoder's own bias
            "bos_token_id": vocab["[DEC]"],
            "sep_token_id": vocab["[SEP]"],
            "eos_token_id": vocab["[SEP]"],
            "pad_token_id": vocab["[PAD]"],
        },
        # BlipVisionConfig initialises with std 1e-10 (it expects pretrained weights): random
        # vision weights that small hide the image, and every image gets the same caption.
        vision_config={**text, "image_size": 384, "patch_size": 16, "initializer_range": 0.02},
        projection_dim=16,
    )
    BlipForConditionalGeneration(config).save_pretrained(files)
    processor = BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer)
    processor.save_pretrained(files)
    (files / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def _clip(files: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = clip_tokenizer()
    tower = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**tower, "image_size": 224, "patch_size": 14},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(files)
    tokenizer.save_pretrained(files)
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(files)
    vocab, merges = vocabulary()  # the real repo also carries the slow tokenizer's two files
    (files / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (files / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )


def _magicprompt(files: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = [*_GPT2_CORPUS, *_PROMPT_WORDS.split()]
    bpe.train_from_iterator(
        corpus,
        vocab_size=600,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
    )
    bpe.save_model(str(files))  # vocab.json and merges.txt, GPT-2's own two files
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    merge_lines = (files / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in merge_lines if line and not line.startswith("#")]
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=1024)
    end = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=end,
        eos_token_id=end,
    )
    GPT2LMHeadModel(config).save_pretrained(files)
    tokenizer.save_pretrained(files)
    (files / "training_args.bin").write_bytes(b"stand-in for the fine-tune's training arguments")
