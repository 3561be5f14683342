"""The fake Discord's modals: what the real discord.py sends and receives, and what Discord refuses.

A small discord.py client (not the cover bot: it has one command and one button that open
modals, so each test shows the fake's rules and nothing else) runs against
:class:`tests.fakes.discord.FakeDiscord`; the refusals are also checked with plain HTTP, so
each one is the fake's and not discord.py's doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands

from tests.fakes import discord_schema
from tests.fakes.discord import FakeDiscord, FakeUser, Interaction, snowflake

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")


class Ask(discord.ui.Modal):
    """Two prefilled inputs: either as discord.py's plain text inputs (each in an action row)
    or inside Label components, Discord's newer form."""

    def __init__(self, *, labelled: bool = False, title: str = "Edit the prompt") -> None:
        super().__init__(title=title, custom_id="ask")
        self.prompt = discord.ui.TextInput(
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default="a night drive",
            max_length=4000,
            **({} if labelled else {"label": "Prompt"}),
        )
        self.negative = discord.ui.TextInput(
            custom_id="negative",
            default="blurry",
            required=False,
            max_length=200,
            **({} if labelled else {"label": "Negative prompt"}),
        )
        if labelled:
            self.add_item(discord.ui.Label(text="Prompt", component=self.prompt))
            self.add_item(discord.ui.Label(text="Negative prompt", component=self.negative))
        else:
            self.add_item(self.prompt)
            self.add_item(self.negative)
        self.answers: list[str] = []

    async def on_submit(self, interaction: discord.Interaction) -> None:
        client: ModalBot = interaction.client  # type: ignore[assignment]
        try:  # a modal never answers a modal submit
            await interaction.response.send_modal(Ask())
        except discord.HTTPException as error:
            client.errors.append(error)
        await interaction.response.send_message(
            f"{self.prompt.value} | {self.negative.value}", ephemeral=True
        )


class ModalBot(discord.Client):
    """``/ask`` and a message button ``open`` answer with :class:`Ask`; ``/ask`` with
    ``title`` set sends a modal of that title (to see it refused)."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        super().__init__(intents=intents)
        self.tree = app_commands.CommandTree(self)
        self.errors: list[discord.HTTPException] = []

        @self.tree.command(name="ask", description="Open a modal")
        async def ask(interaction: discord.Interaction, labelled: bool = False, title: str = ""):
            try:
                await interaction.response.send_modal(
                    Ask(labelled=labelled, **({"title": title} if title else {}))
                )
            except discord.HTTPException as error:
                self.errors.append(error)

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if (interaction.data or {}).get("custom_id") == "open":
            await interaction.response.send_modal(Ask())


@contextlib.asynccontextmanager
async def modal_bot(discord_: FakeDiscord) -> AsyncIterator[ModalBot]:
    discord.http.Route.BASE = discord_.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(discord_.gateway_url)
    bot = ModalBot()
    task = asyncio.create_task(bot.start("fake-token-do-not-print"))
    try:
        await discord_.wait_for(lambda: task.done() or discord_.identified, timeout=30)
        if task.done():
            task.result()
        async with asyncio.timeout(30):
            await bot.wait_until_ready()
        yield bot
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def modal_exchanges(discord_: FakeDiscord) -> list[Any]:
    return [e for e in discord_.exchanges if isinstance(e.sent, dict) and e.sent.get("type") == 9]


@pytest.mark.parametrize("labelled", [False, True], ids=["action-rows", "labels"])
async def test_a_modal_opens_and_its_submitted_values_reach_the_bot(discord, labelled):
    async with modal_bot(discord) as bot:
        opened = await discord.slash(ALICE, "ask", labelled=labelled)
        await discord.wait_for(lambda: opened.modal is not None)
        assert opened.modal["title"] == "Edit the prompt"
        submitted = await discord.submit(ALICE, opened, prompt="a dawn drive")
        await discord.wait_for(lambda: submitted.original is not None)
        # The negative prompt was left as prefilled; the answer is private.
        assert submitted.original.content == "a dawn drive | blurry"
        assert submitted.original.ephemeral
        # A modal may not answer a modal submit: Discord refuses the response type.
        assert [(e.status, e.code) for e in bot.errors] == [(400, 50035)]
        assert "In type: Interaction response type 9 is not valid" in bot.errors[0].text
    sent = modal_exchanges(discord)
    assert [e.status for e in sent] == [200, 400]
    # What the fake took is a body Discord's own description takes.
    assert discord_schema.request_problems("POST", sent[0].path, sent[0].sent) == []


async def test_a_button_opens_a_modal_whose_submit_names_the_message(discord):
    async with modal_bot(discord):
        button = {"type": 2, "style": 1, "label": "Open", "custom_id": "open"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{discord.api_base}/channels/{discord.channel_id}/messages",
                json={"content": "a post", "components": [{"type": 1, "components": [button]}]},
            ) as made,
        ):
            message_id = int((await made.json())["id"])
        pressed = await discord.press(ALICE, message_id, "open")
        await discord.wait_for(lambda: pressed.modal is not None)
        submitted = await discord.submit(ALICE, pressed, negative="")
        await discord.wait_for(lambda: submitted.original is not None)
        assert submitted.message_id == message_id
        assert submitted.values == {"prompt": "a night drive", "negative": ""}
        assert submitted.original.content == "a night drive | "


async def test_a_modal_refused_reaches_the_bot_as_discords_error(discord):
    async with modal_bot(discord) as bot:
        opened = await discord.slash(ALICE, "ask", title="t" * 46)
        await discord.wait_for(lambda: bot.errors)
        assert (bot.errors[0].status, bot.errors[0].code) == (400, 50035)
        assert opened.modal is None and opened.acked_at is None
    assert discord.refused[-1].endswith(": 400 50035")


async def test_only_what_discords_client_lets_through_can_be_submitted(discord):
    async with modal_bot(discord):
        opened = await discord.slash(ALICE, "ask")
        await discord.wait_for(lambda: opened.modal is not None)
        with pytest.raises(ValueError, match="shown to alice"):
            await discord.submit(BOB, opened)
        with pytest.raises(ValueError, match="required"):
            await discord.submit(ALICE, opened, prompt="")
        with pytest.raises(ValueError, match="takes 0-200 characters"):
            await discord.submit(ALICE, opened, negative="n" * 201)
        with pytest.raises(ValueError, match="no text input"):
            await discord.submit(ALICE, opened, seed="1")
        await discord.submit(ALICE, opened)
        with pytest.raises(ValueError, match="submitted already"):
            await discord.submit(ALICE, opened)
        unanswered = await discord.slash(ALICE, "ask-nothing")  # no such command: no modal
        with pytest.raises(ValueError, match="not answered with a modal"):
            await discord.submit(ALICE, unanswered)


def text_input(**fields: Any) -> dict[str, Any]:
    return {"type": 4, "custom_id": "prompt", "style": 2, "label": "Prompt"} | fields


def modal(*rows: dict[str, Any], **fields: Any) -> dict[str, Any]:
    rows = rows or ({"type": 1, "components": [text_input()]},)
    return {
        "type": 9,
        "data": {"custom_id": "ask", "title": "Edit", "components": list(rows)} | fields,
    }


def row(**fields: Any) -> dict[str, Any]:
    return {"type": 1, "components": [text_input(**fields)]}


# Each bad modal, with where in the body Discord says the problem is.
REFUSED = {
    "title over 45": (modal(title="t" * 46), ["data", "title"]),
    "no title": (modal(title=""), ["data", "title"]),
    "custom_id over 100": (modal(custom_id="c" * 101), ["data", "custom_id"]),
    "no rows": (modal(components=[]), ["data", "components"]),
    "six rows": (
        modal(*[row(custom_id=f"p{n}") for n in range(6)]),
        ["data", "components"],
    ),
    "two inputs in a row": (
        modal({"type": 1, "components": [text_input(), text_input(custom_id="other")]}),
        ["data", "components", "0", "components"],
    ),
    "a button in a modal": (
        modal({"type": 1, "components": [{"type": 2, "style": 1, "custom_id": "b"}]}),
        ["data", "components", "0", "components", "0", "type"],
    ),
    "label over 45": (
        modal(row(label="l" * 46)),
        ["data", "components", "0", "components", "0", "label"],
    ),
    "no label": (modal(row(label=None)), ["data", "components", "0", "components", "0", "label"]),
    "a Label's text over 45": (
        modal({"type": 18, "label": "l" * 46, "component": text_input(label=None)}),
        ["data", "components", "0", "label"],
    ),
    "input custom_id over 100": (
        modal(row(custom_id="c" * 101)),
        ["data", "components", "0", "components", "0", "custom_id"],
    ),
    "max_length over 4000": (
        modal(row(max_length=4001)),
        ["data", "components", "0", "components", "0", "max_length"],
    ),
    "max_length 0": (
        modal(row(max_length=0)),
        ["data", "components", "0", "components", "0", "max_length"],
    ),
    "min_length over 4000": (
        modal(row(min_length=4001)),
        ["data", "components", "0", "components", "0", "min_length"],
    ),
    "min_length over max_length": (
        modal(row(min_length=10, max_length=5)),
        ["data", "components", "0", "components", "0", "min_length"],
    ),
    "value over 4000": (
        modal(row(value="v" * 4001)),
        ["data", "components", "0", "components", "0", "value"],
    ),
    "value over max_length": (
        modal(row(value="v" * 11, max_length=10)),
        ["data", "components", "0", "components", "0", "value"],
    ),
    "placeholder over 100": (
        modal(row(placeholder="p" * 101)),
        ["data", "components", "0", "components", "0", "placeholder"],
    ),
    "unknown style": (modal(row(style=3)), ["data", "components", "0", "components", "0", "style"]),
    "one custom_id twice": (modal(row(), row()), ["data", "components"]),
}


async def test_the_fake_refuses_each_modal_discord_refuses(discord):
    """Plain HTTP, so each refusal is the fake's: 400 Invalid Form Body (50035), the error
    nested where the problem is, the interaction still unanswered; the largest modal Discord
    takes (5 rows, 4,000 characters each) is kept."""
    api = discord.api_base
    async with aiohttp.ClientSession() as http:
        for name, (body, where) in REFUSED.items():
            interaction = Interaction(
                snowflake(), f"token-{name}", ALICE, "ask", {}, time.monotonic()
            )
            discord.interactions[interaction.id] = interaction
            url = f"{api}/interactions/{interaction.id}/{interaction.token}/callback"
            async with http.post(url, json=body) as answer:
                refusal = await answer.json()
            assert (answer.status, refusal["code"]) == (400, 50035), name
            errors = refusal["errors"]
            for key in where:
                assert key in errors, (name, key, refusal["errors"])
                errors = errors[key]
            assert errors["_errors"], name
            assert interaction.acked_at is None and interaction.modal is None, name
        largest = modal(
            *[
                row(
                    custom_id=f"p{n}",
                    value="v" * 4000,
                    max_length=4000,
                    min_length=4000,
                    label="l" * 45,
                    placeholder="p" * 100,
                )
                for n in range(5)
            ],
            title="t" * 45,
            custom_id="c" * 100,
        )
        kept = Interaction(snowflake(), "token-largest", ALICE, "ask", {}, time.monotonic())
        discord.interactions[kept.id] = kept
        url = f"{api}/interactions/{kept.id}/{kept.token}/callback"
        async with http.post(url, json=largest) as answer:
            assert answer.status == 204
        assert kept.modal == largest["data"]
        # Where Discord's description states the rule too, it refuses the same bodies. It has
        # none for two inputs in a row or min > max, and lets a modal hold up to 40 components
        # where discord-api-docs' Interactions, Modal, says 1-5: the fake keeps the docs' 5.
        assert discord_schema.request_problems("POST", "/interactions/1/t/callback", largest) == []
        for name in ("title over 45", "custom_id over 100", "value over 4000", "label over 45"):
            assert (
                discord_schema.request_problems(
                    "POST", "/interactions/1/t/callback", REFUSED[name][0]
                )
                != []
            ), name


async def test_a_modal_answers_neither_autocomplete_nor_a_modal_submit(discord):
    api = discord.api_base
    typed = Interaction(snowflake(), "token-typed", ALICE, "ask", {}, time.monotonic(), kind=4)
    submit = Interaction(snowflake(), "token-submit", ALICE, "ask", {}, time.monotonic(), kind=5)
    discord.interactions |= {typed.id: typed, submit.id: submit}
    async with aiohttp.ClientSession() as http:
        for interaction in (typed, submit):
            url = f"{api}/interactions/{interaction.id}/{interaction.token}/callback"
            async with http.post(url, json=modal()) as answer:
                refusal = await answer.json()
            assert (answer.status, refusal["code"]) == (400, 50035)
            assert refusal["errors"]["type"]["_errors"][0]["code"] == (
                "INTERACTION_RESPONSE_TYPE_INVALID"
            )
        # A modal submit opened by a slash command has no message to update.
        url = f"{api}/interactions/{submit.id}/{submit.token}/callback"
        async with http.post(url, json={"type": 7, "data": {"content": "x"}}) as answer:
            assert answer.status == 400
        async with http.post(url, json={"type": 4, "data": {"content": "thanks"}}) as answer:
            assert answer.status == 204
