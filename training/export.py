"""``python -m training export-votes``: the bot's own history as a training set.

Every closed vote with a winner gives one pair: the winning candidate's PNG and the prompt that
made it. The result is an image folder with ``metadata.jsonl`` (``file_name``, ``text``, and
where it came from), the format ``python -m training --data`` reads.

``python -m training export-pairs`` writes the same votes as preference pairs (winner, loser,
same prompt) for ``python -m training dpo``; :func:`preference_pairs` states the rule.

The database is read as untrusted input: file names are built from request ids through
:func:`file_stem` (they cannot leave ``--out``), an image path is read only when it names a
sane image (models/safe_files.py), and a row that does not have the stored shape is skipped
and counted (``malformed``), not a traceback. A request posted more than once gives the pairs
of its last closed post only (``superseded`` counts the others): two posts of one request can
disagree (1 > 2 on one, 2 > 1 on the other), and DPO must not learn both.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bot.app.records import ClosedVote
from models.errors import FileRefused
from models.safe_files import check_image
from training.data import write_image_folder

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}  # what the bot writes
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def file_stem(request_id: Any, index: Any) -> str:
    """``<request id>-<index>`` as a file name that stays in its folder: characters beyond
    ``[A-Za-z0-9_-]`` become ``_`` (``../../x`` cannot climb out), long ids are cut, and an id
    that had to change gets a hash of its original so two ids cannot meet in one name."""
    text = str(request_id)
    safe = _UNSAFE.sub("_", text)[:64] or "request"
    if safe != text:
        safe += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{safe}-{int(index)}"


def _usable(source: Path, refused: list[str]) -> bool:
    """Whether ``source`` is a sane image to copy (a database can name /dev/zero or a bomb);
    a refusal is kept in ``refused`` for the summary."""
    if source.suffix.lower() not in _IMAGE_SUFFIXES:
        refused.append(str(source))
        return False
    try:
        check_image(source)
    except FileRefused:
        refused.append(str(source))
        return False
    return True


T = TypeVar("T")


def _last_post_per_request(rows: list[T], request_id: Callable[[T], str]) -> tuple[list[T], int]:
    """The rows (oldest first) with only the last closed post of each request kept, and how
    many earlier posts were dropped."""
    last = {request_id(row): row for row in rows}
    kept = [row for row in rows if last[request_id(row)] is row]
    return kept, len(rows) - len(kept)


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    exported: int
    missing: list[str]  # image paths recorded in the database but no longer on disk
    malformed: int = 0  # rows without the stored shape, skipped
    superseded: int = 0  # earlier closed posts of a request that was posted again


def database(db: str | Path) -> str | Path:
    """What :class:`~bot.app.storage.Storage` opens for ``db``: a ``postgresql://`` URL as it
    is (the bot's ``COVER_DB_URL``), else the SQLite file, which must exist."""
    from bot.app.storage.dialect import is_postgres_url, mask_password

    if is_postgres_url(str(db)):
        return str(db)
    path = Path(db)
    if not path.is_file():
        # Masked: a mistyped URL ("postgres-ql://user:password@…") lands here too.
        shown = mask_password(str(db)) if "@" in str(db) else path
        raise FileNotFoundError(f"There is no database at {shown} (COVER_DB_PATH).")
    return path


def export_votes(db_path: str | Path, out: str | Path) -> ExportResult:
    """Copy each closed vote's winning image into ``out`` and write its ``metadata.jsonl``.
    ``db_path``: the bot's SQLite file or its PostgreSQL URL."""
    from bot.app.storage import Storage

    target, out = database(db_path), Path(out)
    with Storage(target) as storage:
        winners, superseded = _last_post_per_request(
            storage.winning_covers(), lambda w: w.request_id
        )
    out.mkdir(parents=True, exist_ok=True)
    rows, missing, malformed = [], [], 0
    for winner in winners:
        candidate = winner.candidate
        source = Path(candidate.png_path or candidate.jpeg_path or "")
        try:
            file_name = file_stem(winner.request_id, candidate.index) + source.suffix.lower()
        except (TypeError, ValueError):
            malformed += 1
            continue
        if not source.is_file() or not _usable(source, missing):
            if str(source) not in missing:
                missing.append(str(source))
            continue
        shutil.copyfile(source, out / file_name)
        rows.append(
            {
                "file_name": file_name,
                "text": candidate.prompt,
                "playlist_id": winner.playlist_id,
                "playlist_name": winner.playlist_name,
                "model": winner.model,
                "seed": candidate.seed,
                "voted_at": winner.closed_at,
            }
        )
    write_image_folder(rows, out)
    return ExportResult(out, len(rows), missing, malformed, superseded)


# -- preference pairs (python -m training export-pairs) ----------------------------------------

PAIRS_FILE = "pairs.jsonl"


@dataclass(frozen=True)
class PairsResult:
    folder: Path
    pairs: int
    votes: int  # closed votes in the date range that gave at least one pair
    skipped: dict[str, int]  # why candidates gave no pair, by reason (the rule's names)
    missing: list[str]  # image paths recorded in the database but no longer on disk
    malformed: int = 0  # votes whose rows lack the stored shape (params not an object…)
    superseded: int = 0  # earlier closed posts of a request posted again (the last one counts)


def preference_pairs(vote: ClosedVote, *, min_margin: int = 1) -> tuple[list[dict], Counter]:
    """The pairs one closed vote gives, by the rule docs/dpo.md states:

    - the winner is the one the bot recorded (most votes; a tie goes to the lower number,
      bot/app/votes.py ``pick_winner``); every other candidate is a loser of one pair
      (winner, loser) with ``margin`` = winner's votes − loser's votes;
    - a loser tied with the winner gives no pair (``tie``): the tie-break is a rule, not a
      preference; nor does one with ``margin < min_margin`` (``margin``). With the default
      ``min_margin`` 1 a single-vote outcome (1 against 0) is kept; ``min_margin=2`` drops it;
    - a loser made from another prompt than the winner (the ``mix`` style writes one per
      candidate) gives no pair (``prompt``): DPO compares two images of the same condition.

    Returns the pairs (plain dicts, no files yet) and a count of the skipped candidates.
    """
    if min_margin < 1:
        raise ValueError(f"min_margin must be at least 1, got {min_margin}")
    tally = vote.tally
    by_index = {c.index: c for c in vote.candidates}
    winner = vote.winner
    skipped: Counter = Counter()
    if winner is None:
        skipped["winner-missing"] += 1
        return [], skipped
    pairs = []
    for index, loser in sorted(by_index.items()):
        if index == winner.index:
            continue
        margin = tally.get(winner.index, 0) - tally.get(index, 0)
        if margin == 0:
            skipped["tie"] += 1
        elif margin < min_margin:
            skipped["margin"] += 1
        elif loser.prompt != winner.prompt:
            skipped["prompt"] += 1
        else:
            pairs.append(
                {
                    "message_id": vote.message.message_id,
                    "request_id": vote.request.id,
                    "guild_id": vote.request.guild_id,
                    "closed_at": vote.message.closed_at,
                    "model": vote.request.model,
                    "lora": vote.request.params.lora,
                    "community_style": vote.request.params.community,
                    "text": winner.prompt,
                    "winner_index": winner.index,
                    "winner_seed": winner.seed,
                    "winner_votes": tally.get(winner.index, 0),
                    "winner_path": winner.png_path or winner.jpeg_path,
                    "loser_index": index,
                    "loser_seed": loser.seed,
                    "loser_votes": tally.get(index, 0),
                    "loser_path": loser.png_path or loser.jpeg_path,
                    "margin": margin,
                }
            )
    return pairs, skipped


def export_pairs(
    db_path: str | Path,
    out: str | Path,
    *,
    min_margin: int = 1,
    since: datetime | None = None,
    until: datetime | None = None,
    guild_id: str | None = None,
) -> PairsResult:
    """Write every closed vote's preference pairs (:func:`preference_pairs`) into ``out``:
    the images under ``images/`` and one JSON line per pair in ``pairs.jsonl`` (``text``,
    ``winner_file``, ``loser_file``, seeds, votes, margin, where it came from), the format
    ``python -m training dpo --data`` reads. ``since``/``until``: the votes' closing time
    (``since`` included, ``until`` not); ``guild_id``: one server's votes only."""
    from bot.app.storage import Storage

    target, out = database(db_path), Path(out)
    if min_margin < 1:  # here, not only in the rule: a bad option is not a malformed row
        raise ValueError(f"min_margin must be at least 1, got {min_margin}")
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    with Storage(target) as storage:
        votes, malformed = storage.closed_votes(since=since, until=until)
    if guild_id is not None:
        votes = [v for v in votes if v.request.guild_id == guild_id]
    votes, superseded = _last_post_per_request(votes, lambda v: v.request.id)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, missing, skipped, used = [], [], Counter(), 0
    for vote in votes:
        try:
            pairs, why = preference_pairs(vote, min_margin=min_margin)
            for pair in pairs:
                for side in ("winner", "loser"):
                    pair[f"{side}_stem"] = file_stem(pair["request_id"], pair[f"{side}_index"])
        except (KeyError, TypeError, ValueError, AttributeError):
            malformed += 1  # a row edited by hand or by an older bot: not the stored shape
            continue
        skipped.update(why)
        kept = 0
        for pair in pairs:
            files = {}
            for side in ("winner", "loser"):
                source = Path(pair.pop(f"{side}_path") or "")
                stem = pair.pop(f"{side}_stem")
                if not source.is_file() or not _usable(source, missing):
                    if str(source) not in missing:
                        missing.append(str(source))
                    continue
                name = stem + source.suffix.lower()
                if not (images / name).exists():
                    shutil.copyfile(source, images / name)
                files[f"{side}_file"] = f"images/{name}"
            if len(files) == 2:
                rows.append({**files, **pair})
                kept += 1
        used += kept > 0
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp = out / (PAIRS_FILE + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out / PAIRS_FILE)
    return PairsResult(out, len(rows), used, dict(skipped), missing, malformed, superseded)
