"""What :class:`bot.app.storage.Storage` hands back: frozen records, built from rows here only.

    RequestRecord       one /cover or CLI run, with its StoredParams and its prompts
    ├── StoredParams    the ``params`` JSON column: what the request asked for, typed
    CandidateRecord     one image of a request: (request_id, index) → prompt, seed, files
    CoverMessage        a post that shows a request's candidates and collects its votes
    ClosedVote          a vote closed with a winner: its post, request, tally and candidates
    MalformedRow        raised for a row without the shape written here (training skips it)
    WinningCover        the winning candidate of a closed vote with what made it
    LinkState, SpotifyAccount, Upload, CommunityStyle   the Spotify and community-style rows

The ``params`` column's JSON is written by :meth:`StoredParams.to_json` and read by
:meth:`StoredParams.from_json`, nowhere else; the other JSON columns (``prompts``,
``timings``) are decoded in :meth:`RequestRecord.from_row`. Timestamps stay the ISO 8601
strings they are stored as (they sort as text); :func:`moment` reads one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.app.prompts import Prompt

# Why a vote closed: the requester's ✅, the timer, or its post was deleted (no winner then).
CLOSE_REASONS = ("requester", "timer", "deleted")
UPLOAD_STATUSES = ("applied", "rate_limited", "failed")


class MalformedRow(ValueError):
    """A stored row without the shape this module writes: edited by hand or by another program.
    Readers of the whole history (training's exports) skip and count such rows."""


def moment(timestamp: str) -> datetime:
    """A stored timestamp as an aware datetime."""
    return datetime.fromisoformat(timestamp)


@dataclass(frozen=True)
class StoredParams:
    """The generation settings and options a request was made with (the ``params`` column).

    Enough to make the same covers again after a restart (:meth:`CoverService.resume`) and to
    reroll them (:func:`bot.app.cover.request_again`).
    """

    width: int
    height: int
    steps: int
    guidance: float
    lora: str | None = None
    style: str = "seed"
    count: int | None = None  # None: as many as the stored prompts
    title_overlay: bool = False
    community: bool = False  # made with the server's community style (its LoRA)
    variations_of: str | None = None  # the candidate PNG the variations were made from
    strength: float | None = None  # how far the variations could move from it
    look: str | None = None  # "current" or "attachment": started from that picture (look.py)
    start_image: str | None = None  # the picture as saved, for a reroll or a restart

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": self.guidance,
            "lora": self.lora,
            "style": self.style,
            "count": self.count,
            "title_overlay": self.title_overlay,
            "community": self.community,
        }
        if self.variations_of is not None:
            data |= {"variations_of": self.variations_of, "strength": self.strength}
        if self.look is not None:
            data |= {"look": self.look, "start_image": self.start_image, "strength": self.strength}
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> StoredParams:
        """Raises :class:`MalformedRow` for JSON that is not the object :meth:`to_json` writes."""
        try:
            data = json.loads(text)
            return cls._from_object(data)
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedRow(f"stored params {text[:80]!r}: {error!r}") from None

    @classmethod
    def _from_object(cls, data: Any) -> StoredParams:
        if not isinstance(data, dict):
            raise TypeError(f"params must be an object, not {type(data).__name__}")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            steps=int(data["steps"]),
            guidance=float(data["guidance"]),
            lora=data.get("lora"),
            style=data.get("style") or "seed",
            count=data.get("count"),
            title_overlay=bool(data.get("title_overlay")),
            community=bool(data.get("community")),
            variations_of=data.get("variations_of"),
            strength=data.get("strength"),
            look=_text_or_none(data.get("look"), "look"),
            start_image=_text_or_none(data.get("start_image"), "start_image"),
        )


def _text_or_none(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be text, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class RequestRecord:
    id: str
    created_at: str
    source: str  # "cli" or "discord"
    user_id: str
    guild_id: str | None
    channel_id: str | None
    playlist_id: str
    playlist_name: str
    model: str
    params: StoredParams
    prompts: tuple[Prompt, ...]
    status: str  # "queued", then "done" / "failed" / ...
    timings: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    finished_at: str | None = None
    resumes: int = 0  # how often a restart queued it again

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RequestRecord:
        """Raises :class:`MalformedRow` when a JSON column is not what this module writes."""
        try:
            prompts = tuple(
                Prompt(p["text"], p["negative"], p["style"], p["seed"])
                for p in json.loads(row["prompts"])
            )
            timings = json.loads(row["timings"]) if row["timings"] else {}
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedRow(f"request {row['id']!r}: {error!r}") from None
        return cls(
            id=row["id"],
            created_at=row["created_at"],
            source=row["source"],
            user_id=row["user_id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            playlist_id=row["playlist_id"],
            playlist_name=row["playlist_name"],
            model=row["model"],
            params=StoredParams.from_json(row["params"]),
            prompts=prompts,
            status=row["status"],
            timings=timings,
            error=row["error"],
            finished_at=row["finished_at"],
            resumes=row["resumes"],
        )


def prompts_json(prompts: tuple[Prompt, ...] | list[Prompt]) -> str:
    """The ``prompts`` column: a JSON list of {text, negative, style, seed}."""
    return json.dumps(
        [
            {"text": p.text, "negative": p.negative, "style": p.style, "seed": p.seed}
            for p in prompts
        ],
        ensure_ascii=False,
    )


@dataclass(frozen=True)
class CandidateRecord:
    request_id: str
    index: int  # 1-based, as the vote reactions
    prompt: str
    negative: str
    seed: int  # the seed that made the image
    png_path: str | None
    jpeg_path: str | None
    black_retries: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CandidateRecord:
        return cls(
            request_id=row["request_id"],
            index=row["idx"],
            prompt=row["prompt"],
            negative=row["negative"],
            seed=row["seed"],
            png_path=row["png_path"],
            jpeg_path=row["jpeg_path"],
            black_retries=row["black_retries"],
        )


@dataclass(frozen=True)
class CoverMessage:
    message_id: str
    channel_id: str
    request_id: str
    candidate_count: int
    status: str  # "open" or "closed"
    winner: int | None
    created_at: str
    closed_at: str | None
    close_reason: str | None  # one of CLOSE_REASONS, None where unknown

    @property
    def open(self) -> bool:
        return self.status == "open"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CoverMessage:
        return cls(**{name: row[name] for name in _FIELDS[cls]})


@dataclass(frozen=True)
class ClosedVote:
    """A vote closed with a winner, with what training needs to learn from it."""

    message: CoverMessage
    request: RequestRecord
    tally: Mapping[int, int]  # choice → votes, every candidate present
    candidates: tuple[CandidateRecord, ...]

    @property
    def winner(self) -> CandidateRecord | None:
        """The winning candidate (None when its row is gone)."""
        return next((c for c in self.candidates if c.index == self.message.winner), None)


@dataclass(frozen=True)
class WinningCover:
    """The winning candidate of a closed vote, with where it came from."""

    message_id: str
    closed_at: str
    request_id: str
    playlist_id: str
    playlist_name: str
    model: str
    candidate: CandidateRecord


@dataclass(frozen=True)
class LinkState:
    state_hash: str
    discord_user_id: str
    verifier: bytes  # encrypted
    created_at: str
    expires_at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LinkState:
        return cls(**{name: row[name] for name in _FIELDS[cls]})


@dataclass(frozen=True)
class SpotifyAccount:
    discord_user_id: str
    spotify_user_id: str
    display_name: str | None
    scopes: str  # space-separated, as Spotify granted them
    tokens: bytes  # encrypted
    expires_at: str
    linked_at: str
    refreshed_at: str | None
    spotify_account_id: str | None  # None for accounts linked before Spotify sent one

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SpotifyAccount:
        return cls(**{name: row[name] for name in _FIELDS[cls]})


@dataclass(frozen=True)
class Upload:
    id: int
    message_id: str
    request_id: str
    playlist_id: str
    discord_user_id: str
    spotify_user_id: str | None
    candidate: int | None
    jpeg_bytes: int | None
    status: str  # one of UPLOAD_STATUSES
    error: str | None
    created_at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Upload:
        return cls(**{name: row[name] for name in _FIELDS[cls]})


@dataclass(frozen=True)
class CommunityStyle:
    guild_id: str
    lora_path: str
    base_model: str
    set_by: str
    set_at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CommunityStyle:
        return cls(**{name: row[name] for name in _FIELDS[cls]})


# The records whose fields are their table's columns, one to one.
_FIELDS: dict[type, tuple[str, ...]] = {
    record: tuple(record.__dataclass_fields__)
    for record in (CoverMessage, LinkState, SpotifyAccount, Upload, CommunityStyle)
}


# What a server does with a candidate the safety checker flagged (bot/app/server_rules.py).
NSFW_POLICIES = ("drop", "spoiler")


@dataclass(frozen=True)
class ServerSettings:
    """A server's own rules (``/settings``, bot/app/server_rules.py). The defaults are the bot's
    behaviour in a server that never set anything: no banned words, no daily limit, flagged
    candidates dropped. The ``banned_words`` column's JSON is written and read here only."""

    guild_id: str
    banned_words: tuple[str, ...] = ()  # normalised (server_rules.normalise_word), sorted
    daily_limit: int = 0  # requests per person per UTC day; 0: no limit
    nsfw: str = "drop"  # one of NSFW_POLICIES
    updated_by: str | None = None  # the Discord user who last changed them
    updated_at: str | None = None

    def banned_words_json(self) -> str:
        """The ``banned_words`` column: a JSON list of strings."""
        return json.dumps(list(self.banned_words), ensure_ascii=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ServerSettings:
        """Raises :class:`MalformedRow` when ``banned_words`` is not the list written here."""
        try:
            words = json.loads(row["banned_words"])
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise TypeError("banned_words must be a list of strings")
        except (TypeError, ValueError) as error:
            raise MalformedRow(f"server settings {row['guild_id']!r}: {error!r}") from None
        return cls(
            guild_id=row["guild_id"],
            banned_words=tuple(words),
            daily_limit=int(row["daily_limit"]),
            nsfw=row["nsfw"],
            updated_by=row["updated_by"],
            updated_at=row["updated_at"],
        )
