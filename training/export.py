"""``python -m training export-votes``: the bot's own history as a training set.

Every closed vote with a winner gives one pair: the winning candidate's PNG and the prompt that
made it. The result is an image folder with ``metadata.jsonl`` (``file_name``, ``text``, and
where it came from), the format ``python -m training --data`` reads.

``python -m training export-pairs`` writes the same votes as preference pairs (winner, loser,
same prompt) for ``python -m training dpo``; :func:`preference_pairs` states the rule.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from training.data import write_image_folder


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    exported: int
    missing: list[str]  # image paths recorded in the database but no longer on disk


def export_votes(db_path: str | Path, out: str | Path) -> ExportResult:
    """Copy each closed vote's winning image into ``out`` and write its ``metadata.jsonl``."""
    from bot.app.storage import Storage

    db_path, out = Path(db_path), Path(out)
    if not db_path.is_file():
        raise FileNotFoundError(f"There is no database at {db_path} (COVER_DB_PATH).")
    with Storage(db_path) as storage:
        winners = storage.winning_covers()
    out.mkdir(parents=True, exist_ok=True)
    rows, missing = [], []
    for winner in winners:
        source = Path(winner["png_path"] or winner["jpeg_path"] or "")
        if not source.is_file():
            missing.append(str(source))
            continue
        file_name = f"{winner['request_id']}-{winner['index']}{source.suffix}"
        shutil.copyfile(source, out / file_name)
        rows.append(
            {
                "file_name": file_name,
                "text": winner["prompt"],
                "playlist_id": winner["playlist_id"],
                "playlist_name": winner["playlist_name"],
                "model": winner["model"],
                "seed": winner["seed"],
                "voted_at": winner["closed_at"],
            }
        )
    write_image_folder(rows, out)
    return ExportResult(folder=out, exported=len(rows), missing=missing)


# -- preference pairs (python -m training export-pairs) ----------------------------------------

PAIRS_FILE = "pairs.jsonl"


@dataclass(frozen=True)
class PairsResult:
    folder: Path
    pairs: int
    votes: int  # closed votes in the date range that gave at least one pair
    skipped: dict[str, int]  # why candidates gave no pair, by reason (the rule's names)
    missing: list[str]  # image paths recorded in the database but no longer on disk


def preference_pairs(vote: dict[str, Any], *, min_margin: int = 1) -> tuple[list[dict], Counter]:
    """The pairs one closed vote gives, by the rule docs/dpo.md states:

    - the winner is the one the bot recorded (most votes; a tie goes to the lower number,
      bot/cogs/votes.py ``pick_winner``); every other candidate is a loser of one pair
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
    tally: dict[int, int] = vote["tally"]
    by_index = {c["index"]: c for c in vote["candidates"]}
    winner = by_index.get(vote["winner"])
    skipped: Counter = Counter()
    if winner is None:
        skipped["winner-missing"] += 1
        return [], skipped
    pairs = []
    for index, loser in sorted(by_index.items()):
        if index == winner["index"]:
            continue
        margin = tally.get(winner["index"], 0) - tally.get(index, 0)
        if margin == 0:
            skipped["tie"] += 1
        elif margin < min_margin:
            skipped["margin"] += 1
        elif loser["prompt"] != winner["prompt"]:
            skipped["prompt"] += 1
        else:
            pairs.append(
                {
                    "message_id": vote["message_id"],
                    "request_id": vote["request_id"],
                    "guild_id": vote["guild_id"],
                    "closed_at": vote["closed_at"],
                    "model": vote["model"],
                    "lora": vote["params"].get("lora"),
                    "community_style": bool(vote["params"].get("community_style")),
                    "text": winner["prompt"],
                    "winner_index": winner["index"],
                    "winner_seed": winner["seed"],
                    "winner_votes": tally.get(winner["index"], 0),
                    "winner_path": winner["png_path"] or winner["jpeg_path"],
                    "loser_index": index,
                    "loser_seed": loser["seed"],
                    "loser_votes": tally.get(index, 0),
                    "loser_path": loser["png_path"] or loser["jpeg_path"],
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

    db_path, out = Path(db_path), Path(out)
    if not db_path.is_file():
        raise FileNotFoundError(f"There is no database at {db_path} (COVER_DB_PATH).")
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    with Storage(db_path) as storage:
        votes = storage.closed_votes(since=since, until=until)
    if guild_id is not None:
        votes = [v for v in votes if v["guild_id"] == guild_id]
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, missing, skipped, used = [], [], Counter(), 0
    for vote in votes:
        pairs, why = preference_pairs(vote, min_margin=min_margin)
        skipped.update(why)
        kept = 0
        for pair in pairs:
            files = {}
            for side in ("winner", "loser"):
                source = Path(pair.pop(f"{side}_path") or "")
                if not source.is_file():
                    missing.append(str(source))
                    continue
                name = f"{pair['request_id']}-{pair[f'{side}_index']}{source.suffix}"
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
    return PairsResult(out, len(rows), used, dict(skipped), missing)
