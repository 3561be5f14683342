"""The REST exchanges with the fake Discord, checked against Discord's own API description.

The description is discord/discord-api-spec's ``specs/openapi.json`` (OpenAPI 3.1, Discord's
HTTP API v10, published by Discord). ``discord_openapi.json`` beside this file is the part of
it the bot uses: the operations below, their request bodies and answers, and every schema they
reach, verbatim but for the prose (descriptions dropped). Regenerate it with::

    python -m tests.fakes.discord_schema path/to/discord-api-spec/specs/openapi.json COMMIT

Both directions are checked: what the bot sends (so the fake cannot accept a body Discord
would not) and what the fake answers (so it cannot drift from what Discord answers). Schemas
are JSON Schema 2020-12, as OpenAPI 3.1 writes them; ``required`` and ``type`` are Discord's.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

EXTRACT = Path(__file__).with_name("discord_openapi.json")
SOURCE = "https://github.com/discord/discord-api-spec/blob/{commit}/specs/openapi.json"
# The description's licence (its repository's LICENSE), kept with the extract.
LICENSE = (
    "MIT License. Copyright 2023 Discord. The full text: "
    "https://github.com/discord/discord-api-spec/blob/main/LICENSE"
)

# What the bot calls, as (method, the description's path).
OPERATIONS = (
    ("get", "/users/@me"),
    ("get", "/oauth2/applications/@me"),
    ("put", "/applications/{application_id}/commands"),
    ("put", "/applications/{application_id}/guilds/{guild_id}/commands"),
    ("post", "/interactions/{interaction_id}/{interaction_token}/callback"),
    ("post", "/webhooks/{webhook_id}/{webhook_token}"),
    ("get", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
    ("patch", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
    ("post", "/channels/{channel_id}/messages"),
    ("get", "/channels/{channel_id}/messages/{message_id}"),
    ("delete", "/channels/{channel_id}/messages/{message_id}"),
    ("put", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"),
    ("delete", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"),
    ("get", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}"),
)

_DROP = {"description", "summary", "externalDocs", "examples", "example"}


# -- extracting (run by hand when the description changes) ---------------------------------------


def extract(description: Mapping[str, Any], commit: str) -> dict[str, Any]:
    """The operations in :data:`OPERATIONS` – request body and answers by status, as JSON
    schemas – and every component they reach, under the description's own ``#/components``
    paths so references resolve unchanged."""
    out: dict[str, Any] = {
        "source": SOURCE.format(commit=commit),
        "version": description["info"]["version"],
        "openapi": description["openapi"],
        "license": LICENSE,
        "operations": {},
        "components": {"schemas": {}, "responses": {}, "headers": {}},
    }
    pending: list[str] = []

    def refs(node: Any) -> None:
        if isinstance(node, Mapping):
            if isinstance(node.get("$ref"), str):
                pending.append(node["$ref"])
            for value in node.values():
                refs(value)
        elif isinstance(node, list):
            for value in node:
                refs(value)

    for method, path in OPERATIONS:
        operation = description["paths"][path][method]
        body = operation.get("requestBody", {}).get("content", {})
        entry: dict[str, Any] = {
            "request": _strip(body["application/json"]["schema"]) if body else None,
            "responses": {},
        }
        for status, response in operation["responses"].items():
            entry["responses"][status] = _strip(response)
        out["operations"][f"{method.upper()} {path}"] = entry
        refs(entry)
    components = description["components"]
    while pending:
        ref = pending.pop()
        _, _, kind, name = ref.split("/")
        if name in out["components"][kind]:
            continue
        out["components"][kind][name] = _strip(components[kind][name])
        refs(out["components"][kind][name])
    return out


def _strip(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _strip(v) for k, v in node.items() if k not in _DROP}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


# -- checking ----------------------------------------------------------------------------------


@cache
def _description() -> dict[str, Any]:
    return json.loads(EXTRACT.read_text())


def _template(method: str, path: str) -> str | None:
    """The description's operation for a concrete request (``/channels/1/messages``)."""
    for key in _description()["operations"]:
        wanted, pattern = key.split(" ", 1)
        regex = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(pattern)) + "$"
        if wanted == method.upper() and re.match(regex, path):
            return key
    return None


# Where the description says less than Discord does, each with where Discord says so.
PATCHES: dict[str, dict[str, Any]] = {
    # An Invalid Form Body's innermost errors carry a string code ("BASE_TYPE_MAX_LENGTH"), as
    # discord-api-docs' Reference, Error Messages, "Example Array Error" shows; the description
    # reuses the integer-coded top-level Error there.
    "InnerErrors": {
        "additionalProperties": False,
        "properties": {
            "_errors": {
                "items": {
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    "required": ["code", "message"],
                    "type": "object",
                },
                "type": "array",
            }
        },
        "required": ["_errors"],
        "type": "object",
    },
}


@cache
def _components(request: bool) -> dict[str, Any]:
    """The kept components with :data:`PATCHES`; for requests a snowflake may also be an
    integer. The description types it as a string (what Discord answers), but Discord takes
    integers, and discord.py sends them so in ``allowed_mentions``, ``message_reference`` and
    the ``attachments`` list of every message with files (discord/mentions.py,
    discord/message.py, discord/http.py); a check that refused them would refuse every post."""
    components = copy.deepcopy(_description()["components"])
    components["schemas"] |= copy.deepcopy(PATCHES)
    if request:
        snowflake = components["schemas"]["SnowflakeType"]
        components["schemas"]["SnowflakeType"] = {
            "anyOf": [snowflake, {"type": "integer", "minimum": 0}]
        }
    return components


def _errors(schema: Any, value: Any, *, request: bool = False) -> list[str]:
    # The kept components ride along in the schema's root, so its "#/components/…" references
    # resolve as they do in the description (an unknown keyword is ignored by JSON Schema).
    root = {"components": _components(request), **schema}
    validator = jsonschema.Draft202012Validator(root)
    found = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:200]}" for e in found]


def request_problems(method: str, path: str, body: Any) -> list[str]:
    """What in a request body Discord's description refuses (empty: none)."""
    key = _template(method, path)
    if key is None:
        return [f"{method} {path}: not an operation the description (as kept) has"]
    schema = _description()["operations"][key]["request"]
    if schema is None or body is None:
        return []
    return [f"{key} request: {e}" for e in _errors(schema, body, request=True)]


def response_problems(
    method: str, path: str, status: int, body: Any, headers: Mapping[str, str]
) -> list[str]:
    """What in an answer Discord's description does not allow (empty: none): its status, its
    body, and the headers the description lists for it."""
    key = _template(method, path)
    if key is None:
        return [f"{method} {path}: not an operation the description (as kept) has"]
    responses = _description()["operations"][key]["responses"]
    response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    if response is None:
        return [f"{key}: status {status} is not one the description lists ({sorted(responses)})"]
    if "$ref" in response:
        _, _, kind, name = response["$ref"].split("/")
        response = _description()["components"][kind][name]
    problems = [
        f"{key} {status}: header {name} missing"
        for name in response.get("headers", {})
        if name not in headers
    ]
    content = response.get("content", {}).get("application/json")
    if content is None:
        if body not in (None, b"", ""):
            problems.append(f"{key} {status}: a body where the description has none")
        return problems
    return problems + [f"{key} {status}: {e}" for e in _errors(content["schema"], body)]


if __name__ == "__main__":
    spec_path, commit = sys.argv[1], sys.argv[2]
    trimmed = extract(json.loads(Path(spec_path).read_text()), commit)
    EXTRACT.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    print(f"{len(trimmed['components']['schemas'])} schemas kept in {EXTRACT.name}")
