"""A server's community style: its own LoRA, preference-tuned from its votes (docs/dpo.md:
Diffusion-DPO on its pairs, or Diffusion-KTO on its liked and disliked candidates; both write
the same LoRA file), on the base model it was trained on. ``/cover community:True`` paints
with it."""

from __future__ import annotations

from pathlib import Path

from bot.app.errors import InvalidOption
from bot.app.settings import Settings
from bot.app.storage import Storage
from models.registry import ModelSpec, resolve_model


def community_model(storage: Storage, guild_id: str | None) -> tuple[str, str]:
    """The (base model, LoRA path) the server's community style uses; InvalidOption when the
    request has no server or the server has none."""
    if guild_id is None:
        raise InvalidOption("`community` works in a server only: it uses the server's style.")
    style = storage.community_style(guild_id)
    if style is None:
        raise InvalidOption(
            "This server has no community style yet: an administrator sets one with "
            "`/community set` once a LoRA has been trained from its votes."
        )
    return style.base_model, style.lora_path


def set_community_style(
    settings: Settings,
    storage: Storage,
    guild_id: str,
    *,
    lora_name: str,
    base_model: str | None,
    set_by: str,
) -> ModelSpec:
    """Point a server at ``lora_name``, a file (or folder holding
    ``pytorch_lora_weights.safetensors``) in ``settings.community_lora_dir``, on ``base_model``
    (default: the bot's default model). Checked before it is stored: a name outside that
    folder, a missing file or a base model the registry does not know is refused with one
    sentence."""
    folder = Path(settings.community_lora_dir).expanduser()
    name = lora_name.strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InvalidOption(
            f"`lora` must be the name of a file in the bot's community LoRA folder, got {name!r}."
        )
    spec = resolve_model(base_model or settings.default_model, lora=str(folder / name))
    storage.set_community_style(
        guild_id, lora_path=str(spec.lora), base_model=spec.name, set_by=set_by
    )
    return spec
