"""``/cover``: validate → defer → submit → follow up (discord.py ``examples/app_commands``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.app.cover import CoverJob
from bot.app.errors import StartImageRefused
from bot.app.files import CoverResult
from bot.app.look import LOOK_STRENGTH, LOOKS, MAX_START_BYTES, check_size, check_type
from bot.app.prompts import MAX_CANDIDATES, STYLES
from bot.app.records import RequestRecord
from bot.app.request import VARIATION_STRENGTH, CoverRequest, people_models
from bot.app.server_rules import ServerRefusal
from bot.cogs.controls import controls_view
from bot.cogs.helpers import (
    CLOSE_EMOJI,
    NO_MENTIONS,
    NUMBER_EMOJI,
    TOKEN_LIFETIME_S,
    count_as_command,
    error_text,
    model_choices,
    post_result,
    reply,
)
from models.errors import CoverError, QueueClosed
from models.queue import Failed, Finished, Preview, Progress, Queued, Started

if TYPE_CHECKING:
    from bot.client import CoverBot

log = logging.getLogger(__name__)

MAX_MB = MAX_START_BYTES // 1024 // 1024
ATTACHMENT_TIMEOUT_S = 20.0  # 5 MB from Discord's CDN: seconds even on a slow link


class CoverCog(commands.Cog):
    token_lifetime_s = TOKEN_LIFETIME_S  # a class attribute so tests can pretend time passed

    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    @app_commands.command(name="cover")
    @app_commands.describe(
        playlist="Spotify playlist link, spotify: URI or id",
        model="Which model paints the covers: a preset or a folder the operator allows",
        count="How many candidates to vote on, 1-4",
        style="How the prompts are written ('seed' is the paper's '<title> playlist cover image')",
        title="Set the playlist's title onto the covers",
        community="Paint in this server's community style (its LoRA, learnt from its votes)",
        look="Start from the playlist's current cover, or from an image you attach",
        strength=f"With look: how far from the picture, 0.05-1 (default {LOOK_STRENGTH})",
        image=f"With look:attachment: a JPEG or PNG to start from (at most {MAX_MB} MB)",
    )
    @app_commands.choices(
        style=[app_commands.Choice(name=s, value=s) for s in STYLES],
        look=[app_commands.Choice(name=s, value=s) for s in LOOKS],
    )
    async def cover(
        self,
        interaction: discord.Interaction,
        playlist: str,
        model: str | None = None,
        count: app_commands.Range[int, 1, MAX_CANDIDATES] = MAX_CANDIDATES,
        style: str = "seed",
        title: bool = False,
        community: bool = False,
        look: str | None = None,
        strength: app_commands.Range[float, 0.05, 1.0] = LOOK_STRENGTH,
        image: discord.Attachment | None = None,
    ) -> None:
        """Make candidate covers for a Spotify playlist and vote on them."""
        started = time.monotonic()
        if image is not None:  # what Discord says of it, checked before the 3 s budget goes
            look = look or "attachment"
            try:
                check_type(image.content_type, "The attached image")
                check_size(image.size, "The attached image")
            except StartImageRefused as refused:
                await interaction.response.send_message(
                    str(refused), ephemeral=True, allowed_mentions=NO_MENTIONS
                )
                return
        await interaction.response.defer(thinking=True)  # before anything slow: 3 s budget
        try:
            data = await _attachment_bytes(image) if image is not None else None
        except StartImageRefused as refused:
            await _private(interaction, str(refused))
            return
        request = CoverRequest(
            playlist=playlist,
            user_id=str(interaction.user.id),
            source="discord",
            model=model,
            count=count,
            style=style,
            title_overlay=title,
            community=community,
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
            channel_id=str(interaction.channel_id),
            look=look,
            strength=strength if look else VARIATION_STRENGTH,  # without a look: unused
            image=data,
            image_type=image.content_type if image is not None else None,
        )
        try:
            await self.deliver(interaction, request, started)
        except StartImageRefused as refused:  # told to the requester alone, nothing queued
            await _private(interaction, str(refused))

    @commands.Cog.listener()
    async def on_cover_request(
        self, interaction: discord.Interaction, request: CoverRequest, started: float, what: str
    ) -> None:
        """A request made with a control under a cover post (a reroll, variations): the
        controls (bot/cogs/controls.py) dispatch it as this event once it is checked and the
        press deferred. Its errors are the press's: replied to the presser, like a command's."""
        count_as_command(interaction)
        try:
            await self.deliver(interaction, request, started)
        except Exception as error:
            await reply(interaction, error_text(error, what), ephemeral=True)

    async def deliver(
        self, interaction: discord.Interaction, request: CoverRequest, started: float
    ) -> None:
        """Start ``request``, show its progress in the (deferred) reply, post the covers. The
        slash command and the controls under a cover post (``on_cover_request``) end here."""
        request = dataclasses.replace(request, nsfw_channel=_is_nsfw(interaction.channel))
        # Every refusal is raised here: bad link, private playlist, cooldown, queue full…
        try:
            job = await self.bot.service.start(request)
        except ServerRefusal as refusal:  # the server's own rules: told to the person only
            await _refuse_privately(interaction, str(refusal))
            return
        chosen = job.model
        why = f" (auto: {chosen.auto_reason})" if chosen.auto_reason else ""
        what = "variation(s)" if request.variations_of else "cover(s)"
        await interaction.edit_original_response(
            content=f"Making {request.count} {what} for **{_escape(job.facts.name)}** "
            f"with {chosen.name}{why}…",
            allowed_mentions=NO_MENTIONS,
        )
        status = asyncio.create_task(self._show_status(interaction, job, started))
        try:
            cover = await job.result()
        except QueueClosed:
            await reply(
                interaction, "The bot is restarting; your covers will be made once it is back."
            )
            return
        finally:
            status.cancel()
        late = time.monotonic() - started >= self.token_lifetime_s
        await self._post(
            cover, interaction.user.id, interaction.channel_id, None if late else interaction
        )
        if not late:  # the status message ends with the outcome, without a stale preview
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(
                    content=f"Done in {time.monotonic() - started:.0f} s: the covers are below.",
                    attachments=[],
                )

    @cover.autocomplete("model")
    async def _model_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return model_choices(current, people_models(self.bot.settings))

    async def _show_status(
        self, interaction: discord.Interaction, job: CoverJob, started: float
    ) -> None:
        """Edit the deferred reply as the job moves: always for a change of state, for
        progress at most once per ``status_edit_interval_s`` (Discord rate-limits edits).

        The job's events are read as they come and only the latest state is kept; one editor
        sends it, one edit at a time, and skips a status already shown. So an edit waiting on
        Discord's rate limit never holds the job's later events (its end among them) behind
        it: with the setting at 0, a backlog of stale edits would hold the covers back
        (tests/e2e/test_discord_faults.py).
        """
        interval = self.bot.settings.status_edit_interval_s
        line = _StatusLine()
        editor = asyncio.create_task(self._edit_status(interaction, job, line))
        try:
            async for event in job.events():
                if isinstance(event, Finished | Failed):
                    return
                now = time.monotonic()
                files: list[discord.File] = []  # a preview replaces the last; text drops it
                if isinstance(event, Queued):
                    text = f"Queued: position {event.position}."
                elif isinstance(event, Started):
                    text = "Generating…"
                elif isinstance(event, Progress) and now - line.shown_at >= interval:
                    text = f"Generating: step {event.step}/{event.total}."
                elif isinstance(event, Preview) and now - line.shown_at >= interval:
                    text = f"Generating: step {event.step}, rough preview:"
                    files = [_preview_file(event)]
                else:
                    continue
                if now - started > self.token_lifetime_s:
                    return  # the token is about to expire; the result is posted in the channel
                line.show(text, files)
        finally:
            editor.cancel()

    @staticmethod
    async def _edit_status(
        interaction: discord.Interaction, job: CoverJob, line: _StatusLine
    ) -> None:
        """Send ``line``'s latest state whenever it changes, one edit at a time."""
        while True:
            await line.changed.wait()
            line.changed.clear()
            text, files = line.text, line.files
            if text == line.shown and not files:
                continue  # the same step reported again
            try:
                await interaction.edit_original_response(content=text, attachments=files)
                line.shown, line.shown_at = text, time.monotonic()
            except discord.HTTPException:
                log.info("Could not edit the status of %s", job.id[:8], exc_info=True)

    async def _post(
        self,
        cover: CoverResult,
        user_id: int,
        channel_id: int,
        interaction: discord.Interaction | None = None,
    ) -> None:
        """Post the candidates with the sheet, add one number reaction each, open the vote.

        Through the interaction while its token lives; as a plain channel message otherwise
        (a job that outlived the token, or one resumed after a restart).
        """
        # Discord hides a file named SPOILER_… until clicked: flagged candidates kept by the
        # server's NSFW policy, and the sheet, which shows them too.
        sheet = (cover.sheet_path, _spoiler(bool(cover.flagged), "sheet.png"))
        files = [
            *(
                (c.png_path, _spoiler(c.index in cover.flagged, f"cover-{c.index}.png"))
                for c in cover.candidates
            ),
            sheet,
        ]
        jpegs = [
            (c.jpeg_path, _spoiler(c.index in cover.flagged, f"cover-{c.index}.jpg"))
            for c in cover.candidates
        ]
        # Lighter posts for a server whose upload limit refuses the PNGs (it depends on boosts).
        limit = "(This server's upload limit refused the PNGs"
        smaller = [
            (f"{limit}: the Spotify JPEGs instead.)", [*jpegs, sheet]),
            (f"{limit} and the sheet: the Spotify JPEGs only.)", jpegs),
            (f"{limit} and the JPEGs: the numbered sheet only.)", [sheet]),
        ]
        numbers = " ".join(NUMBER_EMOJI[: len(cover.candidates)])
        content = (
            f"<@{user_id}>: covers for **{_escape(cover.facts.name)}**. "
            f"Vote with {numbers}; the requester closes the vote with {CLOSE_EMOJI}. "
            "Below: reroll, variations of one, the details, delete."
        )
        if cover.notice:
            content += f"\n{cover.notice}"
        mentions = discord.AllowedMentions(
            users=[discord.Object(id=user_id)], everyone=False, roles=False
        )
        message = await post_result(
            self.bot,
            interaction,
            channel_id,
            content,
            files=files,
            smaller=smaller,
            allowed_mentions=mentions,
            view=controls_view(cover.request_id, len(cover.candidates)),
        )
        self.bot.storage.register_cover_message(
            message_id=str(message.id),
            channel_id=str(channel_id),
            request_id=cover.request_id,
            candidate_count=len(cover.candidates),
        )
        for emoji in NUMBER_EMOJI[: len(cover.candidates)]:
            try:
                await message.add_reaction(emoji)  # discord.py waits out a 429 and retries
            except discord.NotFound:
                return  # deleted as it went up: on_raw_message_delete closes its vote
            except discord.Forbidden:
                # Votes still count when people add the numbers themselves.
                log.warning("No permission to add the vote reactions in channel %s", channel_id)
                return

    # -- restarts ----------------------------------------------------------------------------

    async def resume_unfinished(self) -> None:
        """Queue again what a restart interrupted (:meth:`CoverService.resume_unfinished`
        decides what can be), and tell each requester in their channel."""
        for resumed in self.bot.service.resume_unfinished("discord"):
            row = resumed.record
            channel = self.bot.get_partial_messageable(int(row.channel_id))
            who, name = f"<@{row.user_id}>", _escape(row.playlist_name)
            if resumed.gave_up:
                text = (
                    f"{who}: your covers for **{name}** could not be made: {resumed.error}. "
                    "Please ask again with /cover."
                )
            elif resumed.job is None:
                text = (
                    f"{who}: the bot restarted before your covers for **{name}** "
                    f"were made, and they can't be made now: {resumed.error}"
                )
            else:
                text = (
                    f"{who}: the bot restarted while your covers for **{name}** "
                    "were waiting; they are being made now."
                )
            await _say(channel, text, row.user_id)
            if resumed.job is not None:
                self._resumed.add(asyncio.create_task(self._finish_resumed(resumed.job, row)))

    async def _finish_resumed(self, job: CoverJob, row: RequestRecord) -> None:
        channel = self.bot.get_partial_messageable(int(row.channel_id))
        try:
            cover = await job.result()
            await self._post(cover, int(row.user_id), int(row.channel_id))
        except QueueClosed:
            return  # restarting again: the next start picks it up
        except CoverError as exc:
            await _say(
                channel,
                f"<@{row.user_id}>: your covers for **{_escape(row.playlist_name)}** failed: {exc}",
                row.user_id,
            )
        except Exception:
            log.exception("Resumed request %s failed", row.id[:8])

    async def cog_load(self) -> None:
        self._resumed: set[asyncio.Task[None]] = set()
        self._resuming = asyncio.create_task(self.resume_unfinished())

    async def cog_unload(self) -> None:
        self._resuming.cancel()
        for task in self._resumed:
            task.cancel()


async def _say(channel: discord.abc.Messageable, text: str, user_id: str) -> None:
    """A channel message that may ping exactly one person; failures are logged, not raised."""
    mentions = discord.AllowedMentions(
        users=[discord.Object(id=int(user_id))], everyone=False, roles=False
    )
    try:
        await channel.send(text, allowed_mentions=mentions)
    except discord.HTTPException:
        log.warning("Could not post to channel %s", getattr(channel, "id", "?"), exc_info=True)


class _StatusLine:
    """A status reply's latest state (text and files) and what was last shown of it."""

    def __init__(self) -> None:
        self.text = ""
        self.files: list[discord.File] = []
        self.shown: str | None = None
        self.shown_at = 0.0
        self.changed = asyncio.Event()

    def show(self, text: str, files: list[discord.File]) -> None:
        self.text, self.files = text, files
        self.changed.set()


def _spoiler(hidden: bool, name: str) -> str:
    return f"SPOILER_{name}" if hidden else name


def _is_nsfw(channel: object) -> bool:
    """Whether Discord marks the channel NSFW (a thread: its parent); False when unknown."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


async def _refuse_privately(interaction: discord.Interaction, text: str) -> None:
    """Answer a deferred (public "thinking…") interaction with ``text`` only its person sees:
    the public placeholder is deleted, the answer sent as an ephemeral follow-up."""
    if not interaction.response.is_done():
        await reply(interaction, text, ephemeral=True)
        return
    with contextlib.suppress(discord.HTTPException):
        await interaction.delete_original_response()
    try:
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        log.warning("Could not refuse interaction %s privately", interaction.id, exc_info=True)


def _preview_file(event: Preview) -> discord.File:
    from models.postprocess import preview_strip

    data = io.BytesIO()
    preview_strip(event.images).save(data, format="PNG")
    data.seek(0)
    return discord.File(data, filename="preview.png")


async def _attachment_bytes(image: discord.Attachment) -> bytes:
    """An attachment's bytes within the time limit; their size and kind are checked again
    from the bytes themselves (bot/app/look.py), since what Discord said came from outside."""
    try:
        return await asyncio.wait_for(image.read(), ATTACHMENT_TIMEOUT_S)
    except (TimeoutError, discord.HTTPException) as error:
        raise StartImageRefused(
            f"The attached image could not be read from Discord ({type(error).__name__})."
        ) from None


async def _private(interaction: discord.Interaction, text: str) -> None:
    """Replace the deferred public reply with a message only the requester sees."""
    try:
        await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        await reply(interaction, text)  # the public reply, then, rather than none


def _escape(text: str) -> str:
    return discord.utils.escape_markdown(text)


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(CoverCog(bot))
