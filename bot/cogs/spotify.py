"""``/spotify link|status|unlink``, and the "Apply to Spotify" button under a winning cover.

Linking itself happens in the browser: ``/spotify link`` answers (only to the person) with a
one-time authorisation link, Spotify sends the browser back to the bot's callback server
(:mod:`bot.oauth_callback`, started and stopped with this cog), and the link reply is edited to
say who they are linked as. The work is in :mod:`bot.app.accounts`; this is its Discord face.

The button is a :class:`discord.ui.DynamicItem`: its ``custom_id`` carries the cover message's
id, so a press is understood after a restart too, with nothing kept in memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.app.accounts import LinkedAccount
from bot.app.errors import AppInDevelopmentMode, NotRequester
from bot.app.records import CoverMessage
from bot.cogs.helpers import NO_MENTIONS, TOKEN_LIFETIME_S, count_as_command, error_text
from bot.oauth_callback import CallbackServer

if TYPE_CHECKING:
    from bot.client import CoverBot

log = logging.getLogger(__name__)

APPLY_PREFIX = "spotify-apply:"
MAX_LINK_BUTTON_URL = 512  # Discord's limit on a link button's URL
SPOTIFY_APPS_PAGE = "https://www.spotify.com/account/apps/"  # where people revoke an app
# When Development Mode refuses the upload (docs/spotify.md): the JPEG rides along with this.
HOW_TO_SET_BY_HAND = (
    "Set it yourself: save the JPEG below, then in the Spotify app open the playlist → Edit → "
    "change the image."
)


class ApplyButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=APPLY_PREFIX + r"(?P<message_id>[0-9]{1,20})",
):
    """The "Apply to Spotify" button for the winner of the vote on cover message ``message_id``."""

    def __init__(self, message_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Apply to Spotify",
                style=discord.ButtonStyle.success,
                custom_id=f"{APPLY_PREFIX}{message_id}",
            )
        )
        self.message_id = message_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ApplyButton:
        return cls(int(match["message_id"]))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        count_as_command(interaction)
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        # The Spotify cog takes it from here (SpotifyCog.on_apply_cover): no cog looked up.
        interaction.client.dispatch("apply_cover", interaction, str(self.message_id))


def apply_view(message_id: int) -> discord.ui.View:
    """The view that carries :class:`ApplyButton` under a winner announcement."""
    view = discord.ui.View(timeout=None)
    view.add_item(ApplyButton(message_id))
    return view


class SpotifyCog(
    commands.GroupCog,
    group_name="spotify",
    group_description="Link your Spotify account to the bot",
):
    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot
        self.accounts = bot.accounts
        self._server: CallbackServer | None = None
        # The /spotify link reply of each person, to edit once their browser comes back.
        self._pending: dict[str, tuple[discord.Interaction, float]] = {}
        self._uploading: dict[str, asyncio.Lock] = {}  # one upload per cover message at a time

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ApplyButton)
        if not self.accounts.enabled:
            log.info("Spotify account linking is off: %s", self.accounts.disabled_reason)
            return
        server = CallbackServer(self.accounts, self.bot.settings, on_linked=self._linked)
        try:
            await server.start()
        except OSError as exc:
            # Covers keep working without links; the operator reads why in the log.
            log.error(
                "Could not listen on %s:%s for Spotify's callback (%s); linking is off",
                server.host,
                server.port,
                exc.strerror or exc,
            )
            self.accounts.disable(
                "Linking Spotify accounts is unavailable: the bot could not open its callback "
                "address (its operator can read why in the bot's log)."
            )
            return
        self._server = server

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ApplyButton)
        if self._server is not None:
            await self._server.stop()
            self._server = None

    # -- /spotify link | status | unlink ---------------------------------------------------

    @app_commands.command(name="link")
    async def link(self, interaction: discord.Interaction) -> None:
        """Link your Spotify account: prompts from your own playlists, covers applied to them."""
        user_id = str(interaction.user.id)
        url, expires_at = self.accounts.start_link(user_id)  # off: LinkingDisabled, one sentence
        minutes = self.bot.settings.link_state_ttl_s / 60
        text = (
            "Open the link and allow access on Spotify. The bot may then read your playlists "
            "(for richer prompts) and upload covers to them when you press **Apply to "
            f"Spotify**; nothing else. The link is yours alone and works once, for "
            f"{minutes:g} minutes (until <t:{int(expires_at.timestamp())}:t>)."
        )
        current = self.accounts.account(user_id)
        if current is not None:
            text += f"\nYou are linked as **{_escape(current.display_name)}**; this replaces it."
        view = discord.ui.View()
        if len(url) <= MAX_LINK_BUTTON_URL:
            view.add_item(discord.ui.Button(label="Authorise on Spotify", url=url))
        else:  # a very long redirect URI: the link goes in the text instead
            text += f"\n<{url}>"
        await interaction.response.send_message(
            text, view=view, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
        self._pending[user_id] = (interaction, time.monotonic())

    async def _linked(self, account: LinkedAccount) -> None:
        """The browser came back linked: say so in the person's /spotify link reply."""
        interaction, asked = self._pending.pop(account.discord_user_id, (None, 0.0))
        if interaction is None or time.monotonic() - asked >= TOKEN_LIFETIME_S:
            return  # the reply can't be edited any more; /spotify status tells them
        await interaction.edit_original_response(
            content=f"Linked to Spotify as **{_escape(account.display_name)}**.",
            view=None,
            allowed_mentions=NO_MENTIONS,
        )

    @app_commands.command(name="status")
    async def status(self, interaction: discord.Interaction) -> None:
        """Show which Spotify account you have linked, if any."""
        account = self.accounts.account(str(interaction.user.id))
        if account is None:
            text = "No Spotify account is linked. Link one with /spotify link."
            if not self.accounts.enabled:
                text = f"No Spotify account is linked. {self.accounts.disabled_reason}"
        else:
            may = "read your playlists"
            if account.can_upload:
                may += " and upload covers to them"
            text = (
                f"Linked to Spotify as **{_escape(account.display_name)}** "
                f"(`{account.spotify_user_id}`) since <t:{int(account.linked_at.timestamp())}:D>"
                f"; the bot may {may}. Unlink with /spotify unlink."
            )
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="unlink")
    async def unlink(self, interaction: discord.Interaction) -> None:
        """Unlink your Spotify account: the bot deletes your tokens."""
        if self.accounts.unlink(str(interaction.user.id)):
            text = (
                "Unlinked: the bot deleted your Spotify tokens. To withdraw the app's access on "
                f"Spotify's side as well, remove it at <{SPOTIFY_APPS_PAGE}>."
            )
        else:
            text = "No Spotify account was linked; there was nothing to delete."
        await interaction.response.send_message(text, ephemeral=True)

    # -- Apply to Spotify ------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_apply_cover(self, interaction: discord.Interaction, message_id: str) -> None:
        """A press of an "Apply to Spotify" button (:class:`ApplyButton`)."""
        count_as_command(interaction)
        await self.apply(interaction, message_id)

    async def apply(self, interaction: discord.Interaction, message_id: str) -> None:
        """Validate (the presser asked for these covers) → defer → upload → report in the
        channel, replying to the announcement. Every attempt is recorded by the upload."""
        message = self.bot.storage.cover_message(message_id)
        request = message and self.bot.storage.request(message.request_id)
        if not request or request.user_id != str(interaction.user.id):
            await interaction.response.send_message(
                error_text(NotRequester(), "Apply to Spotify"), ephemeral=True
            )
            return
        await interaction.response.defer()  # an update of the button's message: nothing shown
        files: list[discord.File] = []
        lock = self._uploading.setdefault(message_id, asyncio.Lock())
        async with lock:
            try:
                applied = await self.accounts.apply_cover(
                    message_id=message_id, discord_user_id=str(interaction.user.id)
                )
            except AppInDevelopmentMode as exc:
                text, files = f"{exc} {HOW_TO_SET_BY_HAND}", self._winner_jpeg(message)
            except Exception as exc:
                text = f"The cover was not applied: {error_text(exc, 'Apply to Spotify')}"
            else:
                text = (
                    f"Cover {applied.candidate} is now the cover of "
                    f"**{_escape(applied.playlist_name)}** on Spotify (it can take a few "
                    "minutes to show there)."
                )
        channel = self.bot.get_partial_messageable(int(message.channel_id))
        reference = None
        if interaction.message is not None:
            reference = discord.PartialMessage(channel=channel, id=interaction.message.id)
        try:
            await channel.send(text, reference=reference, allowed_mentions=NO_MENTIONS, files=files)
        except discord.HTTPException:
            log.warning("Could not report the upload of %s", message_id, exc_info=True)

    def _winner_jpeg(self, message: CoverMessage) -> list[discord.File]:
        """The winner's upload-ready JPEG (the one Apply would have sent), to set by hand; none
        when its file is gone."""
        candidate = self.bot.storage.candidate(message.request_id, message.winner or 0)
        if candidate is None or not candidate.jpeg_path or not Path(candidate.jpeg_path).is_file():
            return []
        return [discord.File(candidate.jpeg_path, filename=f"cover-{candidate.index}.jpg")]


def _escape(text: str) -> str:
    return discord.utils.escape_markdown(text)


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(SpotifyCog(bot))
