"""Every answer of the fake Spotify, checked against Spotify's own API description.

The description is sonallux/spotify-web-api's ``fixed-spotify-open-api.yml`` (an independent,
maintained OpenAPI 3.0 description of the Web API, generated from Spotify's reference pages),
version 2026.5.31 – the first to carry the February 2026 changes (``/playlists/{id}/items``,
``item`` for ``track``, search limited to 10). ``spotify_openapi.json`` beside this file is the
part of it the fake serves: the operations below, their responses and the schemas they reach,
verbatim but for the prose (descriptions and examples dropped). Regenerate it with::

    python -m tests.fakes.spotify_schema path/to/fixed-spotify-open-api.yml

``GET /playlists/{playlist_id}/images`` was added to the extract by hand, without the file to
regenerate from: its 200 is the description's ``ArrayOfImages`` (a list of ``ImageObject``), its
errors the shared ones. Regenerating replaces it with the description's own text.

The check is stricter than the description in one way, on purpose: an object may carry only the
fields the description lists (``additionalProperties: false`` on every object, after ``allOf``
is merged), so the fake cannot invent fields – the way it once answered a refused playlist with
an ``items: {href, total}`` stub that Spotify never sends. :data:`PATCHES` are the few places
where Spotify's own text, outside the schema, says more than the schema; each names its source.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

EXTRACT = Path(__file__).with_name("spotify_openapi.json")
SOURCE = "https://github.com/sonallux/spotify-web-api/blob/v2026.5.31/fixed-spotify-open-api.yml"

# What the fake serves, as (method, the description's path).
OPERATIONS = (
    ("get", "/me"),
    ("get", "/playlists/{playlist_id}"),
    ("get", "/playlists/{playlist_id}/items"),
    ("get", "/playlists/{playlist_id}/images"),
    ("put", "/playlists/{playlist_id}/images"),
    ("get", "/artists/{id}"),
    ("get", "/search"),
)

# (schema, property) → what the schema lacks, with where Spotify says so.
PATCHES: dict[tuple[str, str], dict[str, Any]] = {
    # SimplifiedPlaylistObject.items: "Note, a track object may be null. This can happen if a
    # track is no longer available." – the same holds for the item inside a page of items.
    ("PlaylistTrackObject", "item"): {"nullable": True},
    ("PlaylistTrackObject", "track"): {"nullable": True},
    # A 429 since July 2026 may carry "reason": "QUOTA_EXCEEDED" (docs/facts.md, rate limits).
    ("ErrorObject", "reason"): {"type": "string"},
    # Spotify's playlist objects carry `primary_color` (a hex colour or null), which the
    # description omits; examples/playlists/*.json keep it as Spotify sent it.
    ("PlaylistObject", "primary_color"): {"type": "string", "nullable": True},
    ("SimplifiedPlaylistObject", "primary_color"): {"type": "string", "nullable": True},
}
# Search pages hold `null` where a playlist went away (reported since 2024; the collector in
# training/collect.py skips them): the page's items may be null.
NULLABLE_SEARCH_ITEMS = True

_DROP = {"description", "example", "title", "deprecated", "x-spotify-docs-type", "externalDocs"}


# -- extracting (run by hand when the description changes) ---------------------------------------


def extract(description: Mapping[str, Any]) -> dict[str, Any]:
    """The operations in :data:`OPERATIONS`, the responses they name and every schema reached."""
    components = description["components"]
    out: dict[str, Any] = {
        "source": SOURCE,
        "version": description["info"]["version"],
        "operations": {},
        "responses": {},
        "schemas": {},
    }
    pending: list[str] = []

    def refs(node: Any) -> None:
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str):
                pending.append(ref)
            for value in node.values():
                refs(value)
        elif isinstance(node, list):
            for value in node:
                refs(value)

    for method, path in OPERATIONS:
        responses = description["paths"][path][method]["responses"]
        out["operations"][f"{method.upper()} {path}"] = {
            status: answer.get("$ref", None) for status, answer in responses.items()
        }
        refs(responses)
    while pending:
        kind, name = pending.pop().split("/")[-2:]
        if name in out[kind]:
            continue
        node = _strip(components[kind][name])
        out[kind][name] = node
        refs(node)
    return out


def _strip(node: Any, *, names: bool = False) -> Any:
    if names:  # a `properties` map: its keys are field names, "description" included
        return {k: _strip(v) for k, v in node.items()}
    if isinstance(node, Mapping):
        return {k: _strip(v, names=k == "properties") for k, v in node.items() if k not in _DROP}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


# -- checking -------------------------------------------------------------------------------------


@cache
def _description() -> dict[str, Any]:
    return json.loads(EXTRACT.read_text(encoding="utf-8"))


@cache
def _definitions() -> dict[str, Any]:
    """The extract's schemas as JSON Schema (2020-12): ``nullable`` → a null alternative,
    ``allOf`` merged into one closed object, ``oneOf`` + ``discriminator`` → a choice by ``type``."""
    schemas = copy.deepcopy(_description()["schemas"])
    for (name, prop), patch in PATCHES.items():
        schemas[name].setdefault("properties", {}).setdefault(prop, {}).update(patch)
    if NULLABLE_SEARCH_ITEMS:
        paging = schemas["PagingPlaylistObject"]["allOf"][1]["properties"]["items"]
        paging["items"] = {"allOf": [paging["items"]], "nullable": True}
    return {name: _convert(schema, schemas) for name, schema in schemas.items()}


def _merged(node: Mapping[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """An ``allOf`` of objects as one object: the parts' properties and required fields."""
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    parts = [*node.get("allOf", ()), {k: v for k, v in node.items() if k != "allOf"}]
    for part in parts:
        if "$ref" in part:
            part = schemas[part["$ref"].split("/")[-1]]
        if "allOf" in part:
            part = _merged(part, schemas)
        merged["properties"].update(part.get("properties", {}))
        merged["required"] += [r for r in part.get("required", ()) if r not in merged["required"]]
    return merged


def _convert(node: Any, schemas: Mapping[str, Any]) -> Any:
    if not isinstance(node, Mapping):
        return node
    node = dict(node)
    nullable = node.pop("nullable", False)
    if "$ref" in node:
        out: dict[str, Any] = {"$ref": "#/$defs/" + node["$ref"].split("/")[-1]}
    elif "allOf" in node and len(node["allOf"]) == 1 and not node.get("properties"):
        out = _convert({**node["allOf"][0]}, schemas)  # `allOf: [$ref]` beside a description
    elif "allOf" in node:
        out = _convert(_merged(node, schemas), schemas)
    elif "oneOf" in node and "discriminator" in node:
        choices = []
        for ref in node["oneOf"]:
            name = ref["$ref"].split("/")[-1]
            kind = _merged(schemas[name], schemas)["properties"]["type"]["enum"][0]
            choices.append(
                {
                    "if": {"properties": {"type": {"const": kind}}},
                    "then": {"$ref": f"#/$defs/{name}"},
                }
            )
        kinds = [c["if"]["properties"]["type"]["const"] for c in choices]
        out = {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": kinds}},
            "allOf": choices,
        }
    else:
        out = {k: v for k, v in node.items() if k not in ("discriminator", "format")}
        if "properties" in out:
            out["properties"] = {k: _convert(v, schemas) for k, v in out["properties"].items()}
            out["additionalProperties"] = False  # the fake may send nothing the description lacks
            if not out.get("required"):
                out.pop("required", None)
        if "items" in out:
            out["items"] = _convert(out["items"], schemas)
    if nullable:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def response_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The JSON Schema of the answer ``status`` to ``method path`` (the description's path), or
    None when the description gives no JSON body for it (a 202 with no body).

    Statuses the description does not list for the operation (a 400, a 404, a 413, a 5xx) are
    checked against its error object: Spotify answers every error in that one shape.
    """
    description = _description()
    answers = description["operations"][f"{method.upper()} {path}"]
    ref = answers.get(str(status))
    if ref is None:
        ref = None if 200 <= status < 300 else "#/components/responses/Unauthorized"
    if ref is None:
        return None
    response = description["responses"][ref.split("/")[-1]]
    content = response.get("content", {}).get("application/json")
    if content is None:
        return None
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": _definitions(),
        **_convert(content["schema"], description["schemas"]),
    }


def problems(method: str, path: str, status: int, body: Any) -> list[str]:
    """What is wrong with ``body`` as the answer ``status`` to ``method path``: [] when valid."""
    schema = response_schema(method, path, status)
    if schema is None:
        return [] if body is None else [f"{method} {path} {status}: a body where none is described"]
    found = []
    for error in jsonschema.Draft202012Validator(schema).iter_errors(body):
        while error.context:  # a choice (nullable, track or episode): the deepest complaint
            error = max(error.context, key=lambda e: len(e.absolute_path))
        where = "/".join(map(str, error.absolute_path)) or "(body)"
        found.append(f"{method} {path} {status}: {where}: {error.message[:300]}")
    return found


if __name__ == "__main__":
    import yaml  # only to regenerate the extract

    described = yaml.safe_load(Path(sys.argv[1]).read_text(encoding="utf-8"))
    EXTRACT.write_text(json.dumps(extract(described), indent=1, sort_keys=True) + "\n")
    print(f"wrote {EXTRACT} ({EXTRACT.stat().st_size} bytes)")
