"""What a person asks for: a :class:`CoverRequest`, checked before any work; the models people
on Discord may name; and a stored request asked again (a reroll, or variations of one of its
candidates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bot.app.errors import InvalidOption
from bot.app.look import LOOKS
from bot.app.prompts import MAX_CANDIDATES, STYLES
from bot.app.records import RequestRecord
from bot.app.remix import WRITTEN, written_prompts
from bot.app.settings import Settings
from models.parameters import out_of_range
from models.registry import list_models

# Image-to-image strength of "variations of N": the layout and palette stay, details change
# (tests/e2e/test_cover_controls.py measures how much closer they stay than a reroll).
VARIATION_STRENGTH = 0.4


@dataclass(frozen=True)
class CoverRequest:
    """What a person asked for. ``playlist`` is a Spotify link/URI/id or a snapshot file path."""

    playlist: str
    user_id: str = "cli"
    source: str = "cli"
    model: str | None = None  # None → settings.default_model
    lora: str | None = None
    count: int = MAX_CANDIDATES
    seed: int | None = None  # None → a fresh random seed, recorded so the run can be repeated
    style: str = "seed"
    title_overlay: bool = False
    steps: int | None = None  # None → the model preset's
    guidance: float | None = None
    guild_id: str | None = None
    channel_id: str | None = None
    # Variations: image-to-image from this candidate PNG (one the CLI or the bot wrote: its
    # parameters chunk gives the prompt, seed, model and settings); ``playlist`` is then only
    # its label. ``strength``: how far the variations may move from it (0-1).
    variations_of: str | None = None
    strength: float = VARIATION_STRENGTH
    community: bool = False  # use the server's community style (its LoRA on its base model)
    # Prompts the person wrote instead of the playlist's (Remix, the CLI's --prompt): one for
    # every candidate, or one each; ``negative`` None keeps the writer's negative prompt.
    # Cleaned and checked as every prompt is (bot/app/remix.py).
    prompts: tuple[str, ...] = ()
    negative: str | None = None
    # Discord marks the channel NSFW: the server's NSFW policy may then post flagged candidates
    # behind a spoiler (bot/app/server_rules.py keeps_flagged).
    nsfw_channel: bool = False
    # Keep the playlist's look (bot/app/look.py): image-to-image at ``strength`` from the
    # playlist's current cover ("current") or from ``image`` ("attachment": bytes from outside,
    # with the content type they came with). ``start_image``: that picture as saved once read,
    # which a reroll or a restart starts from again.
    look: str | None = None
    image: bytes | None = field(default=None, repr=False)
    image_type: str | None = None
    start_image: str | None = None

    def check(self) -> None:
        """Reject bad values before any work is done (diffusers' ``check_inputs`` habit)."""
        if not 1 <= self.count <= MAX_CANDIDATES:
            raise InvalidOption(f"`count` must be between 1 and {MAX_CANDIDATES}, got {self.count}")
        if self.style not in STYLES:
            raise InvalidOption(f"`style` must be one of {', '.join(STYLES)}, got {self.style!r}")
        # The same limits as an image's parameters (models/parameters.py LIMITS).
        for setting, value in (
            ("steps", self.steps),
            ("guidance", self.guidance),
            ("strength", self.strength),
        ):
            problem = None if value is None else out_of_range(setting, value)
            if problem:
                raise InvalidOption(f"`{setting}` {problem}")
        if self.seed is not None and not 0 <= self.seed < 2**62:
            raise InvalidOption(f"`seed` must be between 0 and 2**62, got {self.seed}")
        if self.community and (self.model is not None or self.lora is not None):
            raise InvalidOption(
                "`community` brings its own model and LoRA; leave `model` out with it"
            )
        if self.look is not None:
            if self.look not in LOOKS:
                raise InvalidOption(f"`look` must be one of {', '.join(LOOKS)}, got {self.look!r}")
            if self.variations_of is not None:
                raise InvalidOption("variations start from their candidate; leave `look` out")
            if self.look == "attachment" and self.image is None and self.start_image is None:
                raise InvalidOption("`look:attachment` needs an `image` to start from")
            if self.look == "current" and self.image is not None:
                raise InvalidOption("give `look:current` or an `image`, not both")
        if self.prompts:
            if self.variations_of is not None:
                raise InvalidOption("variations keep their candidate's prompt; leave `prompt` out")
            # Raises the sentence for a text too long or with nothing left once cleaned.
            written_prompts(self.prompts, self.negative, count=self.count, seed=0)


def people_model(name: str | None, settings: Settings) -> str:
    """The model a person on Discord asked for: a preset, or a folder the operator listed in
    ``discord_model_folders``, named by its folder name; None is the bot's default.

    Anything else gets the same sentence whatever it is – a path that exists on the bot's
    machine, a home directory, a folder that is not a pipeline – so the option cannot be used
    to probe the bot's disk (tests/e2e/test_discord.py).
    """
    if name is None:
        return settings.default_model
    wanted = name.strip()
    if wanted.lower() in list_models():
        return wanted.lower()
    for folder in settings.discord_model_folders:
        if wanted == folder.name:
            return str(folder)
    raise InvalidOption(f"`model` must be one of {', '.join(people_models(settings))}.")


def people_models(settings: Settings) -> list[str]:
    """What the ``/cover`` model option offers: presets, then the operator's folders' names."""
    return [*list_models(), *(folder.name for folder in settings.discord_model_folders)]


def request_again(
    record: RequestRecord,
    *,
    user_id: str,
    settings: Settings,
    variations_of: Path | None = None,
    prompts: tuple[str, ...] = (),
    negative: str | None = None,
) -> CoverRequest:
    """A stored request asked again by ``user_id``: the same playlist and options with new
    seeds (a reroll), or variations of the candidate PNG ``variations_of``. A reroll of
    variations makes new variations of the same candidate.

    ``prompts`` (and ``negative``): a remix – a reroll with the prompts the person edited, one
    per candidate. A reroll of a remix keeps the remix's prompts."""
    stored = record.params
    written = bool(record.prompts) and all(p.style == WRITTEN for p in record.prompts)
    if not prompts and variations_of is None and written:
        prompts = tuple(p.text for p in record.prompts)
        negative = record.prompts[0].negative
    # An operator's folder is offered to people by its name (people_model); the row has its path.
    model = next(
        (f.name for f in settings.discord_model_folders if str(f) == record.model), record.model
    )
    # A remix paints the playlist anew with the edited prompts, even one of variations.
    source = None if prompts else variations_of or stored.variations_of
    # The recorded model (the bot recorded it; a PNG's own claim is not trusted); a community
    # style: the server's again – except for variations, which keep the base it used.
    own_model = source is not None or not stored.community
    # A reroll or remix of covers that kept the playlist's look starts from the same picture.
    look = stored.look if source is None and stored.start_image else None
    return CoverRequest(
        playlist=record.playlist_id,
        user_id=user_id,
        source=record.source,
        model=model if own_model else None,
        # Variations keep the LoRA that made the candidate (its PNG names the base model only).
        lora=stored.lora if own_model else None,
        community=stored.community and source is None,
        count=len(prompts) or stored.count or len(record.prompts) or MAX_CANDIDATES,
        style=stored.style,
        title_overlay=stored.title_overlay,
        guild_id=record.guild_id,
        channel_id=record.channel_id,
        variations_of=None if source is None else str(source),
        strength=(stored.strength if look or stored.variations_of else None) or VARIATION_STRENGTH,
        prompts=prompts,
        negative=negative,
        look=look,
        start_image=stored.start_image if look else None,
    )
