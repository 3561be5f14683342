"""Discord's refusals as the fake words them: its error bodies (HTTP status, message, JSON
error code, errors nested along the body's path) and the checks of a message body, its
components, a command sync, an autocomplete answer and a modal against Discord's limits
(tests/fakes/discord/limits.py).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from aiohttp import web

from tests.fakes.discord.limits import (
    ATTACHMENTS_LIMIT,
    CONTENT_LIMIT,
    EMBEDS_LIMIT,
    MODAL_ROWS_LIMIT,
    MODAL_TITLE_LIMIT,
    PLACEHOLDER_LIMIT,
    TEXT_INPUT_LABEL_LIMIT,
    TEXT_INPUT_LIMIT,
)
from tests.fakes.discord.models import Attachment


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py requires exactly "application/json": aiohttp's json_response adds a charset.
    return web.Response(status=status, body=json.dumps(data), content_type="application/json")


def _error(
    status: int,
    message: str,
    code: int,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An error as Discord words it: its HTTP status, message and JSON error code."""
    body = {"message": message, "code": code, **extra}
    if status == 429:
        body["global"] = False
    return web.Response(
        status=status, body=json.dumps(body), content_type="application/json", headers=headers
    )


def _invalid(where: str, *problems: str, code: str = "BASE_TYPE_BAD") -> web.Response:
    """Discord's 400 Invalid Form Body (50035), its errors nested along ``where``
    (``"data.choices.3.name"``) as Discord nests them."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": p} for p in problems]}
    for key in reversed(where.split(".")):
        errors = {key: errors}
    return _error(400, "Invalid Form Body", 50035, errors=errors)


def _too_long(where: str, limit: int) -> web.Response:
    return _invalid(where, f"Must be {limit} or fewer in length.", code="BASE_TYPE_MAX_LENGTH")


def _message_refused(
    body: dict[str, Any], files: list[Attachment], upload_limit: int
) -> web.Response | None:
    """Discord's limits on a message body (create, follow-up, edit, an interaction's reply),
    or None if kept. Emptiness is the caller's to check: an edit may leave parts as they were."""
    content = body.get("content") or ""
    if len(content) > CONTENT_LIMIT:
        return _too_long("content", CONTENT_LIMIT)
    if len(body.get("embeds") or []) > EMBEDS_LIMIT:
        return _too_long("embeds", EMBEDS_LIMIT)
    if len(files) > ATTACHMENTS_LIMIT or len(body.get("attachments") or []) > ATTACHMENTS_LIMIT:
        return _too_long("attachments", ATTACHMENTS_LIMIT)
    if any(len(f.data) > upload_limit for f in files):  # the server's limit, for each file
        return _error(413, "Request entity too large", 40005)
    return _components_refused(body.get("components"))


def _empty(body: dict[str, Any], files: list[Attachment]) -> bool:
    return not (
        body.get("content")
        or body.get("embeds")
        or files
        or body.get("attachments")
        or body.get("components")
        or body.get("sticker_ids")
        or body.get("poll")
    )


def _emoji_known(emoji: str) -> bool:
    """A custom emoji as ``name:id``, or a Unicode emoji: symbols with their joiners,
    variation selectors and keycaps (``1️⃣`` is ``1``, U+FE0F, U+20E3). Letters, spaces and
    control characters make an unknown emoji."""
    name, _, custom_id = emoji.partition(":")
    if custom_id:
        return bool(name) and custom_id.isdigit()
    if not 1 <= len(emoji) <= 10:
        return False
    kinds = [unicodedata.category(c) for c in emoji]
    if any(k[0] in "LZ" or k == "Cc" for k in kinds):
        return False
    return "So" in kinds or "\u20e3" in emoji or any(0x1F1E6 <= ord(c) <= 0x1F1FF for c in emoji)


_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def _commands_refused(commands: Any) -> web.Response | None:
    """Discord's limits on a command sync: at most 100 chat commands, names 1-32 lower-case
    word characters or dashes, descriptions 1-100 characters, at most 25 options (and 25
    choices) each, required options before optional ones."""
    if not isinstance(commands, list) or len(commands) > 100:
        return _too_long("_", 100)
    for n, command in enumerate(commands):
        if (refused := _command_refused(command, str(n))) is not None:
            return refused
    return None


def _command_refused(item: dict[str, Any], where: str) -> web.Response | None:
    name, description = item.get("name") or "", item.get("description") or ""
    if not _COMMAND_NAME.match(name) or name != name.lower():
        return _invalid(
            f"{where}.name", "Command name is invalid", code="APPLICATION_COMMAND_INVALID_NAME"
        )
    if item.get("type", 1) == 1 and not 1 <= len(description) <= 100:
        return _invalid(
            f"{where}.description",
            "Must be between 1 and 100 in length.",
            code="BASE_TYPE_BAD_LENGTH",
        )
    options = list(item.get("options") or [])
    if len(options) > 25:
        return _too_long(f"{where}.options", 25)
    choices = list(item.get("choices") or [])
    if len(choices) > 25:
        return _too_long(f"{where}.choices", 25)
    for n, choice in enumerate(choices):
        if not 1 <= len(str(choice.get("name") or "")) <= 100:
            return _too_long(f"{where}.choices.{n}.name", 100)
    required = [bool(o.get("required")) for o in options]
    if required != sorted(required, reverse=True):
        return _invalid(
            f"{where}.options",
            "Required options must be placed before non-required options",
            code="APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
        )
    for n, option in enumerate(options):
        if (refused := _command_refused(option, f"{where}.options.{n}")) is not None:
            return refused
    return None


def _choices_refused(data: dict[str, Any]) -> web.Response | None:
    """An autocomplete answer: at most 25 choices, names 1-100 characters, string values up
    to 100. One bad choice and Discord refuses the whole answer (people see no list)."""
    choices = list(data.get("choices") or [])
    if len(choices) > 25:
        return _too_long("data.choices", 25)
    for n, choice in enumerate(choices):
        name, value = str(choice.get("name") or ""), choice.get("value")
        if not 1 <= len(name) <= 100:
            return _too_long(f"data.choices.{n}.name", 100)
        if isinstance(value, str) and len(value) > 100:
            return _too_long(f"data.choices.{n}.value", 100)
    return None


def _components_refused(components: Any) -> web.Response | None:
    """Discord's rules for a message's buttons (see the package docstring), or None if kept."""
    rows = list(components or [])
    problems: list[str] = []
    ids: list[str] = []
    if len(rows) > 5:
        problems.append(f"{len(rows)} action rows (at most 5)")
    for row in rows:
        buttons = list(row.get("components") or [])
        if row.get("type") != 1 or not 1 <= len(buttons) <= 5:
            problems.append(f"an action row of {len(buttons)} components (1-5)")
        for button in buttons:
            label, custom_id = button.get("label") or "", button.get("custom_id")
            if len(label) > 80:
                problems.append(f"a label of {len(label)} characters (at most 80)")
            if button.get("style") != 5:  # link buttons carry a url, not a custom_id
                if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                    problems.append(f"custom_id {custom_id!r} (1-100 characters)")
                ids.append(str(custom_id))
    if len(ids) != len(set(ids)):
        problems.append("a custom_id used twice")
    if not problems:
        return None
    errors = {
        "components": {"_errors": [{"code": "BASE_TYPE_BAD", "message": p} for p in problems]}
    }
    return _error(400, "Invalid Form Body", 50035, errors=errors)


def _length_refused(where: str, value: Any, low: int, high: int) -> web.Response | None:
    """Discord's refusal of a string outside ``low``-``high`` characters, None if within."""
    if isinstance(value, str) and low <= len(value) <= high:
        return None
    if isinstance(value, str) and len(value) > high:
        return _too_long(where, high)
    return _invalid(
        where, f"Must be between {low} and {high} in length.", code="BASE_TYPE_BAD_LENGTH"
    )


def _modal_refused(data: dict[str, Any]) -> web.Response | None:
    """Discord's limits on a modal (callback type 9; see the package docstring), or None if
    kept. Errors are nested along the body's path, as Discord nests them."""
    refused = _length_refused("data.title", data.get("title"), 1, MODAL_TITLE_LIMIT)
    refused = refused or _length_refused("data.custom_id", data.get("custom_id"), 1, 100)
    if refused is not None:
        return refused
    rows = data.get("components")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MODAL_ROWS_LIMIT:
        return _invalid(
            "data.components",
            f"Must be between 1 and {MODAL_ROWS_LIMIT} in length.",
            code="BASE_TYPE_BAD_LENGTH",
        )
    ids: list[str] = []
    for n, row in enumerate(rows):
        where = f"data.components.{n}"
        if row.get("type") == 1:  # an action row: its one text input carries the label
            inputs = list(row.get("components") or [])
            if len(inputs) != 1:
                return _invalid(
                    f"{where}.components",
                    "A modal's action row holds exactly one text input.",
                    code="BASE_TYPE_BAD_LENGTH",
                )
            text_input, where = inputs[0], f"{where}.components.0"
            refused = _text_input_refused(text_input, where, labelled=True)
        elif row.get("type") == 18:  # a Label component around its one text input
            refused = _length_refused(f"{where}.label", row.get("label"), 1, TEXT_INPUT_LABEL_LIMIT)
            text_input, where = row.get("component") or {}, f"{where}.component"
            refused = refused or _text_input_refused(text_input, where, labelled=False)
        else:
            return _invalid(
                f"{where}.type",
                f"Component type {row.get('type')!r} is not a text input's row or label "
                "(the fake knows no other modal component).",
                code="UNION_TYPE_CHOICES",
            )
        if refused is not None:
            return refused
        ids.append(text_input["custom_id"])
    if len(ids) != len(set(ids)):
        return _invalid(
            "data.components",
            "Component custom id cannot be duplicated",
            code="COMPONENT_CUSTOM_ID_DUPLICATED",
        )
    return None


def _text_input_refused(
    text_input: dict[str, Any], where: str, *, labelled: bool
) -> web.Response | None:
    """One text input of a modal within Discord's limits, or its refusal; ``labelled``: it
    carries its own label (in an action row), not a Label component around it."""
    if text_input.get("type") != 4:
        return _invalid(
            f"{where}.type",
            f"Component type {text_input.get('type')!r} is not a text input (4).",
            code="UNION_TYPE_CHOICES",
        )
    if labelled:
        label = text_input.get("label")
        if (
            refused := _length_refused(f"{where}.label", label, 1, TEXT_INPUT_LABEL_LIMIT)
        ) is not None:
            return refused
    if text_input.get("style") not in (1, 2):
        return _invalid(
            f"{where}.style", f"Value {text_input.get('style')!r} is not a valid enum value."
        )
    refused = _length_refused(f"{where}.custom_id", text_input.get("custom_id"), 1, 100)
    if refused is not None:
        return refused
    low, high = text_input.get("min_length"), text_input.get("max_length")
    for name, value, floor in (("min_length", low, 0), ("max_length", high, 1)):
        if value is None:
            continue
        if not isinstance(value, int) or value < floor:
            return _invalid(
                f"{where}.{name}",
                f"int value should be greater than or equal to {floor}.",
                code="NUMBER_TYPE_MIN",
            )
        if value > TEXT_INPUT_LIMIT:
            return _invalid(
                f"{where}.{name}",
                f"int value should be less than or equal to {TEXT_INPUT_LIMIT}.",
                code="NUMBER_TYPE_MAX",
            )
    if low is not None and high is not None and low > high:
        return _invalid(
            f"{where}.min_length",
            "min_length must be less than or equal to max_length.",
            code="BASE_TYPE_BAD_LENGTH",
        )
    value = text_input.get("value")
    if value is not None:
        refused = _length_refused(f"{where}.value", value, 0, high or TEXT_INPUT_LIMIT)
        if refused is not None:
            return refused
    placeholder = text_input.get("placeholder")
    if placeholder is not None:
        return _length_refused(f"{where}.placeholder", placeholder, 0, PLACEHOLDER_LIMIT)
    return None


def _text_inputs(modal: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """A kept modal's text inputs, in order, each with whether it sits in a Label (type 18)."""
    found = []
    for row in modal.get("components") or []:
        if row.get("type") == 18:
            found.append((row["component"], True))
        else:
            found.extend((c, False) for c in row.get("components") or [])
    return found
