"""The Remix form: the requester edits the prompts a cover post was made with, and the edit is
queued as a reroll – the same model and options, new seeds (bot/app/remix.py says which inputs
the form has and why).

The **Remix** button itself is one of the post's controls (bot/cogs/controls.py); a press by
the requester opens :class:`RemixModal`, prefilled with the prompts used. Its submit is
checked in the core before anything is shown (a prompt with nothing left once cleaned, or too
long, is refused privately with a sentence), then deferred and handed to the cover cog as any
reroll is. A form is remembered for :data:`FORM_LIFETIME_S` and not across a restart: a
submit after either finds no form, and the requester presses Remix again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord

from bot.app.records import RequestRecord
from bot.app.remix import MAX_TEXT, read_remix, remix_form
from bot.app.request import request_again
from bot.cogs.helpers import error_text, reply

if TYPE_CHECKING:
    from bot.client import CoverBot

TITLE = "Remix: edit the prompts"  # Discord shows at most 45 characters
# How long an open form is kept in memory (discord.py's view store) waiting for its submit.
FORM_LIFETIME_S = 30 * 60


class RemixModal(discord.ui.Modal):
    """The form for one request's prompts, prefilled; its ``custom_id`` names the request."""

    def __init__(self, record: RequestRecord) -> None:
        super().__init__(
            title=TITLE, custom_id=f"cover:remix-form:{record.id}", timeout=FORM_LIFETIME_S
        )
        self.record = record
        self.fields = remix_form(record.prompts)
        self.inputs: dict[str, discord.ui.TextInput] = {}
        for field in self.fields:
            text_input = discord.ui.TextInput(
                label=field.label,
                custom_id=field.key,
                style=discord.TextStyle.paragraph,
                default=field.value or None,
                max_length=MAX_TEXT,
                required=bool(field.candidates),  # a prompt must be there; the negative may go
            )
            self.inputs[field.key] = text_input
            self.add_item(text_input)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        bot: CoverBot = interaction.client  # type: ignore[assignment]
        try:
            texts, negative = read_remix(
                self.fields, {key: t.value for key, t in self.inputs.items()}
            )
            request = request_again(
                self.record,
                user_id=str(interaction.user.id),
                settings=bot.settings,
                prompts=texts,
                negative=negative,
            )
            request.check()  # refuse a bad text before "thinking…"
        except Exception as error:
            await reply(interaction, error_text(error, "Remix"), ephemeral=True)
            return
        started = time.monotonic()
        await interaction.response.defer(thinking=True)
        # The cover cog takes it from here, as for /cover (CoverCog.on_cover_request).
        bot.dispatch("cover_request", interaction, request, started, "Remix")

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await reply(interaction, error_text(error, "Remix"), ephemeral=True)
