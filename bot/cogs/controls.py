"""The buttons under every cover post: reroll, remix, variations of one candidate, details,
delete.

Votes stay the number reactions (bot/cogs/votes.py); these sit beside them:

- **Reroll** (the requester): the same playlist and options with new seeds, posted as a new vote.
- **Remix** (the requester): a form prefilled with the prompts used; the edited prompts are
  queued as a reroll (bot/cogs/remix.py).
- **V1…V4** (anyone): variations of that candidate – image-to-image from it, with its prompt and
  new seeds (:attr:`bot.app.cover.CoverRequest.variations_of`).
- **Details** (anyone, shown only to them): model, prompts, seeds, steps, guidance, size, time.
- **Delete** (the requester, or someone who may manage messages): removes the post; its vote
  closes without a winner, recorded as deleted.

Rerolls, remixes and variations are requests like any ``/cover``: the same cooldown, per-person queue
limit and queue. Each button is a :class:`discord.ui.DynamicItem` whose ``custom_id`` carries
the action and the request id, so a press is understood after a restart too, with nothing kept
in memory. A press by someone not allowed is refused privately.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.app.errors import FilesGone, NotAllowed
from bot.app.prompts import MAX_CANDIDATES
from bot.app.records import RequestRecord
from bot.app.request import request_again
from bot.cogs.helpers import NUMBER_EMOJI, count_as_command, error_text, reply
from bot.cogs.remix import RemixModal

if TYPE_CHECKING:
    from bot.client import CoverBot

log = logging.getLogger(__name__)

PREFIX = "cover:"
ACTIONS = ("reroll", "remix", "vary", "details", "delete")
MESSAGE_LIMIT = 2000  # Discord's limit on a message's content
_LABELS = {
    "reroll": "🔁 Reroll",
    "remix": "✏️ Remix",
    "details": "ℹ️ Details",
    "delete": "🗑️ Delete",
}


class ControlButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=PREFIX
    + r"(?P<action>reroll|remix|vary|details|delete):(?P<request_id>[0-9a-f]{32})"
    + r"(?::(?P<n>[1-9]))?",
):
    """One control under the cover post of request ``request_id`` (``n``: the candidate)."""

    def __init__(self, action: str, request_id: str, n: int | None = None) -> None:
        if action not in ACTIONS or (action == "vary") != (n is not None):
            raise ValueError(f"bad control {action!r} {n!r}")
        custom_id = f"{PREFIX}{action}:{request_id}" + (f":{n}" if n is not None else "")
        label = f"V{n}" if n is not None else _LABELS[action]
        style = discord.ButtonStyle.danger if action == "delete" else discord.ButtonStyle.secondary
        super().__init__(
            discord.ui.Button(
                label=label, style=style, custom_id=custom_id, row=1 if n is not None else 0
            )
        )
        self.action, self.request_id, self.n = action, request_id, n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ControlButton:
        n = int(match["n"]) if match["n"] else None
        return cls(match["action"], match["request_id"], n)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        count_as_command(interaction)
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        await Controls(interaction.client).press(interaction, self.action, self.request_id, self.n)


def controls_view(request_id: str, candidates: int) -> discord.ui.View:
    """The buttons of one cover post: reroll, remix, details and delete, then one V per
    candidate."""
    view = discord.ui.View(timeout=None)
    for action in ("reroll", "remix", "details", "delete"):
        view.add_item(ControlButton(action, request_id))
    for n in range(1, min(candidates, MAX_CANDIDATES) + 1):
        view.add_item(ControlButton("vary", request_id, n))
    return view


class ControlsCog(commands.Cog):
    """Registers the buttons, so that a press is understood after a restart too."""

    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ControlButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ControlButton)


class Controls:
    """What a press does, with the bot it came to (nothing is kept between presses)."""

    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    async def press(
        self, interaction: discord.Interaction, action: str, request_id: str, n: int | None
    ) -> None:
        what = {"reroll": "Reroll", "vary": f"Variations of {n}"}.get(action, action.title())
        try:
            record = self.bot.storage.request(request_id)
            if record is None:
                raise FilesGone("its request")
            if action == "details":
                await interaction.response.send_message(
                    self.details(record),
                    ephemeral=True,
                    allowed_mentions=discord.AllowedMentions.none(),
                )
            elif action == "delete":
                await self.delete(interaction, record)
            elif action == "remix":
                await self.remix(interaction, record)
            else:
                await self.again(interaction, record, n)
        except Exception as error:
            await reply(interaction, error_text(error, what), ephemeral=True)

    # -- reroll and variations ---------------------------------------------------------------

    async def again(
        self, interaction: discord.Interaction, record: RequestRecord, n: int | None
    ) -> None:
        """Reroll (``n`` None, the requester only) or variations of candidate ``n`` (anyone):
        checked before anything is shown, then the same path as ``/cover``."""
        presser = str(interaction.user.id)
        if n is None and presser != record.user_id:
            raise NotAllowed("Only the person who asked for these covers can reroll them.")
        png = None
        if n is not None:
            candidate = self.bot.storage.candidate(record.id, n)
            png = Path(candidate.png_path) if candidate and candidate.png_path else None
            if png is None or not png.is_file():
                raise FilesGone(png.name if png else f"candidate {n}")
        request = request_again(
            record, user_id=presser, settings=self.bot.settings, variations_of=png
        )
        started = time.monotonic()
        await interaction.response.defer(thinking=True)
        # The cover cog takes it from here, as for /cover (CoverCog.on_cover_request).
        what = "Reroll" if n is None else f"Variations of {n}"
        self.bot.dispatch("cover_request", interaction, request, started, what)

    async def remix(self, interaction: discord.Interaction, record: RequestRecord) -> None:
        """The requester only: the form with the prompts used (its submit: RemixModal)."""
        if str(interaction.user.id) != record.user_id:
            raise NotAllowed("Only the person who asked for these covers can remix them.")
        if not record.prompts:
            raise FilesGone("its prompts")
        await interaction.response.send_modal(RemixModal(record))

    # -- details -------------------------------------------------------------------------------

    def details(self, record: RequestRecord) -> str:
        """Model, settings and time of a request, then each candidate's seed and prompt; the
        negative prompt once when all share it. Cut to Discord's 2,000 characters."""
        params, timings = record.params, record.timings
        candidates = self.bot.storage.candidates(record.id)
        made = f", made in {timings['generate_s']:.1f} s" if "generate_s" in timings else ""
        kind = {"current": "from the playlist's cover", "attachment": "from an attached image"}
        start = kind.get(params.look or "", "variations")
        strength = f", {start} at strength {params.strength:g}" if params.strength else ""
        lines = [
            f"Model **{record.model}**, {params.steps} steps, CFG {params.guidance:g}, "
            f"{params.width}×{params.height} px (posted at 512×512){strength}{made}."
        ]
        negatives = {c.negative for c in candidates}
        if len(negatives) == 1 and (shared := negatives.pop()):
            lines.append(f"Negative prompt: `{_code(shared)}`")
            negatives = set()
        for c in candidates:
            emoji = NUMBER_EMOJI[c.index - 1] if c.index <= len(NUMBER_EMOJI) else c.index
            lines.append(f"{emoji} seed {c.seed}: `{_code(c.prompt)}`")
            if negatives and c.negative:
                lines.append(f"    negative: `{_code(c.negative)}`")
        if not candidates:
            lines.append("No candidates were kept for this request.")
        text = "\n".join(lines)
        return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, interaction: discord.Interaction, record: RequestRecord) -> None:
        """The requester or a server manager removes the post; its vote closes, no winner."""
        permissions = interaction.permissions
        manager = permissions.administrator or permissions.manage_messages
        if str(interaction.user.id) != record.user_id and not manager:
            raise NotAllowed(
                "Only the person who asked for these covers, or someone who may manage "
                "messages here, can delete them."
            )
        message = interaction.message
        if message is not None and self.bot.storage.cover_message(str(message.id)) is not None:
            self.bot.storage.close_vote(str(message.id), winner=None, reason="deleted")
        await interaction.response.send_message(
            "Deleted; the vote closed without a winner.", ephemeral=True
        )
        if message is not None:
            try:
                await message.delete()
            except discord.NotFound:
                pass  # someone was quicker
            except discord.HTTPException:
                log.warning("Could not delete cover post %s", message.id, exc_info=True)


def _code(text: str) -> str:
    return text.replace("`", "ˋ")


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(ControlsCog(bot))
