"""A server's own rules, set by its managers with ``/settings`` and kept per server
(:class:`~bot.app.records.ServerSettings`):

- **banned words**: a request whose playlist text (title, description), prompts or Remix text
  holds one is refused before it is queued, privately, without the word;
- **a daily limit**: requests per person per UTC day in that server (0: none), counted from the
  stored requests – rerolls, variations and remixes are requests too;
- **the NSFW policy**: ``drop`` a candidate the model's safety checker flagged (the bot's own
  behaviour), or post it behind a spoiler – only in a channel Discord marks NSFW; elsewhere it
  is still dropped.

Matching: the text and each banned word are normalised as prompts are (:func:`clean_text`:
NFKC, so fullwidth and "𝓯𝓪𝓷𝓬𝔂" letters become plain ones; zero-width and other format
characters, decorative combining marks and emoji removed), case-folded, and cut into words
(letters, marks and digits; anything else, the underscore included, separates them). A banned entry
matches a run of whole words: "ham" bans "HAM sandwich" and "ham_and_eggs", not "hamster". A
zero-width space inside a word joins it again ("b\u200bad" is "bad"), as it does in the prompt the
model would read.

Requests from the command line, and from outside a server (no ``guild_id``), have no rules.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bot.app.errors import InvalidOption
from bot.app.prompts import clean_text
from bot.app.records import NSFW_POLICIES, ServerSettings
from bot.app.request import CoverRequest
from bot.app.storage import Storage
from models.errors import CoverError

# A server's whole list fits one Discord message (2,000 characters) as `/settings` lists it.
MAX_WORD_LENGTH = 32  # characters in one banned entry, as typed and as normalised
MAX_BANNED_WORDS = 50  # entries per server
MAX_DAILY_LIMIT = 1000  # requests per person per day; above it, leave the limit off (0)
MAX_CHECKED_TEXT = 20_000  # characters of one text the matcher reads (a bound, not a rule)
BANNED_WORD_REFUSAL = (
    "Your request uses a word this server does not allow, so nothing was queued. "
    "Try another playlist or other words."
)


class ServerRefusal(CoverError):
    """A request a server's own rules refuse. Told to the person privately (bot/cogs/cover.py)."""


class BannedWordUsed(ServerRefusal):
    def __init__(self) -> None:
        # Never the word: the refusal must not repeat it (the caller may log that one matched).
        super().__init__(BANNED_WORD_REFUSAL)


class DailyLimitReached(ServerRefusal):
    def __init__(self, limit: int, resets_at: datetime) -> None:
        wait = max(1, round((resets_at - datetime.now(UTC)).total_seconds() / 60))
        when = f"{wait} min" if wait < 60 else f"{wait // 60} h {wait % 60:02d} min"
        super().__init__(
            f"You have had your {limit} request{'s' if limit != 1 else ''} for today in this "
            f"server; the count starts again at midnight UTC (in {when}). Nothing was queued."
        )
        self.limit, self.resets_at = limit, resets_at


# -- matching ------------------------------------------------------------------------------------


def words_of(text: str) -> tuple[str, ...]:
    """``text``'s words as the matcher sees them: cleaned as prompts are, case-folded, cut
    where a character is neither a letter, a mark nor a digit (Unicode categories L, M, N: an
    Indic vowel sign stays inside its word). Reads at most :data:`MAX_CHECKED_TEXT`
    characters."""
    folded = _fold(text[:MAX_CHECKED_TEXT])
    words, word = [], []
    for ch in folded:
        if unicodedata.category(ch)[0] in "LMN":
            word.append(ch)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    return tuple(words)


def _fold(text: str) -> str:
    """Case-folded and cleaned until neither changes it: folding can make what cleaning
    removes ("İ" folds to "i" and a combining dot) and cleaning's NFKC what folding changes
    ("ℌ" is "H"), and a stored word must read the same when read again."""
    for _ in range(4):
        folded = clean_text(text.casefold())
        if folded == text:
            break
        text = folded
    return text


def normalise_word(entry: str) -> str:
    """A banned entry as stored: its words joined by one space. Raises :class:`InvalidOption`
    for an entry too long or with no letters or digits left once cleaned."""
    if len(entry) > MAX_WORD_LENGTH:
        raise InvalidOption(
            f"A banned word may be at most {MAX_WORD_LENGTH} characters, not {len(entry)}."
        )
    words = words_of(entry)
    if not words:
        raise InvalidOption(
            "That banned word has no letters or digits left once emoji, symbols and invisible "
            "characters are removed."
        )
    word = " ".join(words)
    if len(word) > MAX_WORD_LENGTH:  # NFKC may spell one character as many ("㍿" → "株式会社")
        raise InvalidOption(
            f"A banned word may be at most {MAX_WORD_LENGTH} characters once normalised, "
            f"not {len(word)}."
        )
    return word


def banned_word_in(texts: Iterable[str], banned: Iterable[str]) -> str | None:
    """The first banned entry (normalised, as stored) any of ``texts`` holds as whole words, or
    None. The caller must not show it to anyone but the server's managers."""
    entries = [tuple(entry.split()) for entry in banned if entry.strip()]
    if not entries:
        return None
    for text in texts:
        words = words_of(text)
        for entry in entries:
            n = len(entry)
            if any(words[i : i + n] == entry for i in range(len(words) - n + 1)):
                return " ".join(entry)
    return None


# -- the checks before queueing ------------------------------------------------------------------


def day_start(moment: datetime) -> datetime:
    """Midnight UTC of ``moment``'s day: the daily limit counts from there."""
    moment = moment.astimezone(UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def admit(
    storage: Storage, request: CoverRequest, texts: Iterable[str], *, now: datetime | None = None
) -> None:
    """Refuse ``request`` when its server's rules say so: :class:`DailyLimitReached` when its
    person has had the day's requests there, :class:`BannedWordUsed` when any of ``texts`` (the
    playlist's title and description, the prompts, the person's own words) holds a banned word.
    Call it right before the request is recorded, with nothing awaited in between, so two
    requests at once cannot both take the last one of the day."""
    if request.guild_id is None or request.source == "cli":
        return
    settings = storage.server_settings(request.guild_id)
    if settings.daily_limit:
        start = day_start(now or datetime.now(UTC))
        if storage.requests_since(request.guild_id, request.user_id, start) >= settings.daily_limit:
            raise DailyLimitReached(settings.daily_limit, start + timedelta(days=1))
    if banned_word_in(texts, settings.banned_words) is not None:
        raise BannedWordUsed()


def keeps_flagged(storage: Storage, request: CoverRequest) -> bool:
    """Whether a candidate the safety checker flagged is posted (behind a spoiler) rather than
    dropped: only when the server chose ``spoiler`` and the channel is marked NSFW."""
    if request.guild_id is None or not request.nsfw_channel:
        return False
    return storage.server_settings(request.guild_id).nsfw == "spoiler"


# -- what managers change ------------------------------------------------------------------------


def add_banned_word(storage: Storage, guild_id: str, entry: str, *, by: str) -> tuple[str, bool]:
    """Ban ``entry`` in the server. Returns (the entry as stored, whether it was new). Raises
    :class:`InvalidOption` for a bad entry or a full list."""
    word = normalise_word(entry)
    added = False

    def change(current: ServerSettings) -> ServerSettings:
        nonlocal added
        if word in current.banned_words:
            return current
        if len(current.banned_words) >= MAX_BANNED_WORDS:
            raise InvalidOption(
                f"This server already bans {MAX_BANNED_WORDS} words, the most it can; "
                "remove one first."
            )
        added = True
        return dataclasses.replace(
            current, banned_words=tuple(sorted({*current.banned_words, word}))
        )

    storage.change_server_settings(guild_id, change, by=by)
    return word, added


def remove_banned_word(storage: Storage, guild_id: str, entry: str, *, by: str) -> tuple[str, bool]:
    """Allow ``entry`` again. Returns (the entry as normalised, whether it was banned)."""
    word = normalise_word(entry)
    removed = False

    def change(current: ServerSettings) -> ServerSettings:
        nonlocal removed
        removed = word in current.banned_words
        kept = tuple(w for w in current.banned_words if w != word)
        return dataclasses.replace(current, banned_words=kept)

    storage.change_server_settings(guild_id, change, by=by)
    return word, removed


def set_daily_limit(storage: Storage, guild_id: str, limit: int, *, by: str) -> ServerSettings:
    if not 0 <= limit <= MAX_DAILY_LIMIT:
        raise InvalidOption(
            f"`limit` must be between 0 (no limit) and {MAX_DAILY_LIMIT}, got {limit}"
        )
    return storage.change_server_settings(
        guild_id, lambda current: dataclasses.replace(current, daily_limit=limit), by=by
    )


def set_nsfw_policy(storage: Storage, guild_id: str, policy: str, *, by: str) -> ServerSettings:
    if policy not in NSFW_POLICIES:
        raise InvalidOption(f"`policy` must be one of {', '.join(NSFW_POLICIES)}, got {policy!r}")
    return storage.change_server_settings(
        guild_id, lambda current: dataclasses.replace(current, nsfw=policy), by=by
    )
