"""The support models: hub models that are not image generators but serve the data pipeline and
the prompts – a captioner, CLIP, a prompt expander (seed 003's three helpers; docs/training.md).

    name ─► SupportModel (repo id, classes, role) ─► snapshot in the Hugging Face cache
                                                  └► ModelUnavailable naming the model and the
                                                     command that fetches it

They are loaded from the local Hugging Face cache exactly like the hub presets
(:mod:`models.registry`, :mod:`models.hub`): ``python -m bot models pull clip`` fetches one, and
``modeltools/standins/`` writes architecture-faithful stand-ins of all three for tests. A user may
also give a local folder instead of a hub id (a fine-tuned expander, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelUnavailable


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


def fetch_hint(repo_id: str) -> str:
    """How to get ``repo_id`` into the cache, as a clause for a message."""
    from models.hub import fetch_command

    return f"fetch it with {fetch_command(repo_id)} on a machine with network"


def model_folder(name: str, *, role: str) -> Path:
    """The folder to load the support model ``name`` from: a local folder as given, else the
    hub id's snapshot in the local cache. Raises :class:`ModelUnavailable` naming the model, its
    role and how to fetch it when it is not there (nothing is downloaded here)."""
    from models.hub import repo_state
    from models.registry import hf_cache_dir

    known = support_model(name)
    repo_id = known.repo_id if known else name
    local = Path(repo_id).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelUnavailable(f"The {role} model folder {str(local)!r} has no config.json.")
        return local
    if repo_id.count("/") != 1:
        raise ModelUnavailable(
            f"The {role} model {name!r} is neither a folder nor a Hugging Face hub id (ORG/NAME)."
        )
    state = repo_state(repo_id)
    if not state.cached or state.snapshot is None:
        raise ModelUnavailable(
            f"The {role} model {repo_id} is not in the local Hugging Face cache "
            f"({hf_cache_dir()}); {fetch_hint(repo_id)}."
        )
    return state.snapshot


def is_available(name: str) -> bool:
    """Whether :func:`model_folder` would find ``name`` (no loading, no download)."""
    try:
        model_folder(name, role="support")
    except ModelUnavailable:
        return False
    return True
