"""``python -m training export-votes``: the bot's own history as a training set.

Every closed vote with a winner gives one pair: the winning candidate's PNG and the prompt that
made it. The result is an image folder with ``metadata.jsonl`` (``file_name``, ``text``, and
where it came from), the format ``python -m training --data`` reads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

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
