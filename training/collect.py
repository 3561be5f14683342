"""``python -m training collect``: a playlist-cover dataset from Spotify search, as seed 000 built
its ~87k pairs.

**Spotify's Developer Terms forbid using Spotify content to train machine-learning models.**
This collector exists because the seed paper's method needs it; whether you may run it (a
research exemption, Spotify's written permission, the law where you are) is your decision, and
the command refuses to start until you state it with :data:`ACK_FLAG`.

The method (seed 000 §3.1):

1. Queries: ~70 genre/mood keywords (~40% of the queries) and random three-letter prefixes (the
   other ~60%), in an order fixed by ``--seed``.
2. ``GET /v1/search?type=playlist&q=…`` page by page; Spotify gives at most 10 a page today.
3. Skip what is not a user's own cover: several images (Spotify's auto-generated 2x2 mosaic of
   album covers, also served from ``mosaic.scdn.co``), "seed" in the image URL (Spotify's
   templates), playlists owned by ``spotify``; and what we already have: the same playlist id, or
   an image whose 64-bit difference hash lies within ``--hash-distance`` bits of a kept one.
4. Keep the image as it came, with the prompt ``"<title> playlist cover image"`` (the title
   cleaned exactly as the bot cleans it, so training and generation prompts match), in the
   split fixed by the playlist id: 80% ``train``, 10% ``validation``, 10% ``test``.

Output: ``OUT/{train,validation,test}/`` each with the images and ``metadata.jsonl``
(``file_name``, ``text``, ``playlist_id``, ``title``, ``owner``, ``dhash``, ``query``), and
``OUT/collect_state.json``, the position in the query plan. Everything is written as it goes: an
interrupted run (Ctrl-C, a long rate limit, a crash) continues where it stopped when started
again with the same ``--out``. HTTP 429 is waited out when ``Retry-After`` is at most
``--max-wait``; a longer wait stops the run cleanly, to be resumed later.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import string
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bot.app.errors import SpotifyAuthError, SpotifyRateLimited, SpotifyUnavailable
from bot.app.spotify import SEARCH_PAGE_LIMIT, SpotifyAPI
from bot.app.spotify_retry import RetryPolicy
from training.data import METADATA

log = logging.getLogger(__name__)

ACK_FLAG = "--i-accept-spotify-terms-risk"
TERMS_WARNING = (
    "Spotify's Developer Terms forbid using Spotify content (cover images and titles included) "
    "to train machine-learning models. This command downloads exactly that, for exactly that "
    "purpose. Whether you may (a research exemption, written permission from Spotify, the law "
    "where you are) is your decision and your responsibility, not this program's. To go ahead, "
    f"run the command again with {ACK_FLAG}."
)

SPLITS = ("train", "validation", "test")
PAGE_LIMIT = SEARCH_PAGE_LIMIT  # the most playlists Spotify's search returns per page
MAX_IMAGE_BYTES = 8 * 2**20  # a cover bigger than this is not a cover
MAX_OFFSET = 1000  # Spotify's search stops paging at offset 1000
STATE_FILE = "collect_state.json"
SPOTIFY_OWNER = "spotify"

# Genre and mood words; seed 000 used "nearly 70" such as "rock" and "nostalgic" (its list is not
# published, this one is ours).
KEYWORDS = (
    "rock",
    "pop",
    "jazz",
    "blues",
    "classical",
    "hip hop",
    "rap",
    "country",
    "folk",
    "metal",
    "punk",
    "indie",
    "edm",
    "house",
    "techno",
    "trance",
    "dubstep",
    "drum and bass",
    "reggae",
    "soul",
    "funk",
    "disco",
    "r&b",
    "gospel",
    "latin",
    "reggaeton",
    "k-pop",
    "j-pop",
    "lofi",
    "ambient",
    "shoegaze",
    "grunge",
    "emo",
    "ska",
    "bluegrass",
    "opera",
    "soundtrack",
    "synthwave",
    "afrobeat",
    "bossa nova",
    "nostalgic",
    "chill",
    "happy",
    "sad",
    "angry",
    "romantic",
    "dreamy",
    "energetic",
    "calm",
    "dark",
    "summer",
    "winter",
    "autumn",
    "spring",
    "night",
    "morning",
    "rainy day",
    "road trip",
    "workout",
    "study",
    "sleep",
    "party",
    "focus",
    "christmas",
    "halloween",
    "heartbreak",
    "throwback",
    "90s",
    "80s",
    "vibes",
)


class CollectError(RuntimeError):
    """Collection stopped; ``str()`` says why and how to continue."""


# -- pure parts ----------------------------------------------------------------------------------


def query_plan(
    seed: int, count: int, keyword_share: float = 0.4, keywords: tuple[str, ...] = KEYWORDS
) -> list[str]:
    """``count`` search queries: each a keyword with probability ``keyword_share`` (keywords in a
    shuffled order, repeated only after all were used), else a random three-letter prefix."""
    rng = random.Random(seed)
    unused: list[str] = []
    plan = []
    for _ in range(count):
        if rng.random() < keyword_share:
            if not unused:
                unused = list(keywords)
                rng.shuffle(unused)
            plan.append(unused.pop())
        else:
            plan.append("".join(rng.choices(string.ascii_lowercase, k=3)))
    return plan


def split_of(playlist_id: str) -> str:
    """``train`` / ``validation`` / ``test`` as 80/10/10, fixed by the id alone (any machine, any
    order of collection)."""
    bucket = int.from_bytes(hashlib.sha256(playlist_id.encode()).digest()[:4], "big") % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def cover_prompt(title: str) -> str:
    """Seed 000's prompt, with the title cleaned as :mod:`bot.app.prompts` cleans it."""
    from bot.app.prompts import clean_title

    return f"{clean_title(title)} playlist cover image"


def skip_reason(playlist: dict[str, Any] | None) -> str | None:
    """Why a search result is not a usable cover (None: usable). See step 3 of the docstring."""
    if not playlist or not playlist.get("id"):
        return "empty"
    owner = (playlist.get("owner") or {}).get("id")
    if owner == SPOTIFY_OWNER:
        return "spotify_owned"
    images = [i for i in playlist.get("images") or [] if i and i.get("url")]
    if not images:
        return "no_image"
    if len(images) > 1 or any("mosaic.scdn.co" in i["url"] for i in images):
        return "mosaic"
    if "seed" in images[0]["url"].lower():
        return "template"
    return None


def dhash(image: Image.Image) -> int:
    """A 64-bit difference hash (Krawetz, "Kind of Like That", 2013): shrink to 9x8 greys and set
    one bit per horizontally adjacent pair, 1 where the left pixel is brighter. Robust to
    re-encoding and resizing; near-identical covers differ in a few bits."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (grey[:, :-1] > grey[:, 1:]).flatten()  # (64,)
    return int("".join("1" if b else "0" for b in bits), 2)


def nearest_distance(hashes: np.ndarray, value: int) -> int:
    """The smallest Hamming distance between ``value`` and the uint64 array ``hashes`` (65 when
    empty)."""
    if hashes.size == 0:
        return 65
    return int(np.bitwise_count(hashes ^ np.uint64(value)).min())


# -- the collector -------------------------------------------------------------------------------


@dataclass
class CollectConfig:
    out: Path
    queries: int = 175  # ~70 keywords are 40% of 175
    pages_per_query: int = 5  # 10 playlists a page
    keyword_share: float = 0.4
    keywords: tuple[str, ...] = KEYWORDS
    seed: int = 0
    max_playlists: int | None = None  # stop once this many covers are kept (all runs together)
    hash_distance: int = 4  # dHash bits within which two covers count as the same
    max_wait_s: float = 300.0  # longest Retry-After waited out; longer stops the run (resumable)
    timeout_s: float = 15.0
    max_tries: int = 5  # per request, on 429/5xx/network errors


@dataclass
class CollectStats:
    kept: int = 0
    pages: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    finished: bool = False


class Collector:
    """Runs a :class:`CollectConfig` against Spotify's Web API (or any server that speaks it).

    ``sleep`` is injected so tests record waits instead of sleeping.
    """

    def __init__(
        self,
        config: CollectConfig,
        *,
        client_id: str,
        client_secret: str,
        api_base: str = "https://api.spotify.com/v1",
        token_url: str = "https://accounts.spotify.com/api/token",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._spotify = SpotifyAPI(
            api_base=api_base,
            token_url=token_url,
            timeout_s=config.timeout_s,
            policy=RetryPolicy(max_tries=max(1, config.max_tries), max_wait_s=config.max_wait_s),
            credentials=(client_id, client_secret),
            sleep=sleep,
        )
        self.out = Path(config.out)
        self._records: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self._ids: set[str] = set()
        self._hashes = np.zeros(0, dtype=np.uint64)

    # 1. Where we are: the kept records and the position in the query plan.

    def _load(self) -> dict[str, Any]:
        for split in SPLITS:
            path = self.out / split / METADATA
            if not path.is_file():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interruption; the cover is fetched again
                if (path.parent / row["file_name"]).is_file():
                    self._remember(split, row)
        for split in SPLITS:  # rewrite without the broken lines, so appends start clean
            if self._records[split]:
                self._rewrite(split)
        state_path = self.out / STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.is_file() else None
        if state is not None and state["seed"] != self.config.seed:
            raise CollectError(
                f"{self.out} was collected with --seed {state['seed']}; continue with that seed "
                "or collect into another folder."
            )
        return state or {"seed": self.config.seed, "query": 0, "offset": 0}

    def _remember(self, split: str, row: dict[str, Any]) -> None:
        self._records[split].append(row)
        self._ids.add(row["playlist_id"])
        self._hashes = np.append(self._hashes, np.uint64(int(row["dhash"], 16)))

    def _rewrite(self, split: str) -> None:
        path = self.out / split / METADATA
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._records[split]),
            encoding="utf-8",
        )
        tmp.replace(path)

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state) + "\n", encoding="utf-8")
        tmp.replace(self.out / STATE_FILE)

    @property
    def kept(self) -> int:
        return len(self._ids)

    # 2. The run.

    def run(self) -> CollectStats:
        """Collect until the plan or ``max_playlists`` is done; resumes a previous run."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._load()
        stats = CollectStats()
        plan = query_plan(
            self.config.seed, self.config.queries, self.config.keyword_share, self.config.keywords
        )
        max_offset = min(MAX_OFFSET, self.config.pages_per_query * PAGE_LIMIT)
        while state["query"] < len(plan):
            if self._enough():
                break
            query = plan[state["query"]]
            page = self._search(query, state["offset"])
            stats.pages += 1
            for playlist in page.get("items") or []:
                if self._enough():
                    break  # the page stays unfinished: a later run reads it again
                self._consider(playlist, query, stats)
            else:
                self._advance(state, page, max_offset)
        stats.finished = state["query"] >= len(plan)
        stats.kept = self.kept
        stats.splits = Counter({s: len(self._records[s]) for s in SPLITS})
        return stats

    def _advance(self, state: dict[str, Any], page: dict[str, Any], max_offset: int) -> None:
        """Move past a finished page, and save that (after its covers: a restart never skips
        one)."""
        state["offset"] += PAGE_LIMIT
        if not page.get("next") or state["offset"] >= max_offset:
            state["query"], state["offset"] = state["query"] + 1, 0
        self._save_state(state)

    def _enough(self) -> bool:
        return self.config.max_playlists is not None and self.kept >= self.config.max_playlists

    def _consider(self, playlist: dict[str, Any] | None, query: str, stats: CollectStats) -> None:
        reason = skip_reason(playlist)
        if reason is None and playlist["id"] in self._ids:
            reason = "duplicate_id"
        if reason is not None:
            stats.skipped[reason] += 1
            return
        assert playlist is not None
        url = next(i["url"] for i in playlist["images"] if i and i.get("url"))
        try:
            data = self._download(url)
            with Image.open(io.BytesIO(data)) as opened:
                image_format = (opened.format or "").lower()
                image = opened.convert("RGB")
        except (OSError, CollectError) as error:
            log.warning("Skipping %s: its cover could not be read (%s)", playlist["id"], error)
            stats.skipped["image_unreadable"] += 1
            return
        digest = dhash(image)
        if nearest_distance(self._hashes, digest) <= self.config.hash_distance:
            stats.skipped["duplicate_image"] += 1
            return
        split = split_of(playlist["id"])
        suffix = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}.get(image_format)
        folder = self.out / split
        folder.mkdir(parents=True, exist_ok=True)
        if suffix is None:  # keep the bytes as they came when the format is a usual one
            suffix, data = ".png", _png_bytes(image)
        file_name = f"{playlist['id']}{suffix}"
        (folder / file_name).write_bytes(data)
        row = {
            "file_name": file_name,
            "text": cover_prompt(playlist.get("name") or ""),
            "playlist_id": playlist["id"],
            "title": playlist.get("name") or "",
            "owner": (playlist.get("owner") or {}).get("id"),
            "dhash": f"{digest:016x}",
            "query": query,
        }
        self._remember(split, row)
        with (folder / METADATA).open("a", encoding="utf-8") as metadata:
            metadata.write(json.dumps(row, ensure_ascii=False) + "\n")

    # 3. HTTP: Spotify through the project's one Spotify client (bot/app/spotify.py), with
    #    its retry policy bounded by --max-tries and --max-wait; the cover images from the CDN.

    def _search(self, query: str, offset: int) -> dict[str, Any]:
        try:
            return self._spotify.search_playlists(query, offset)
        except SpotifyRateLimited as error:
            raise CollectError(
                f"Spotify asks to wait {error.retry_after:.0f} s (rate limited), longer than "
                f"--max-wait {self.config.max_wait_s:.0f} s or past --max-tries; run the same "
                "command again later to continue."
            ) from None
        except (SpotifyUnavailable, SpotifyAuthError) as error:
            raise CollectError(f"{error} Run the same command again later to continue.") from None

    def _download(self, url: str) -> bytes:
        """A cover image from Spotify's CDN (no token: the URL is public), at most
        :data:`MAX_IMAGE_BYTES`."""
        try:
            with urllib.request.urlopen(url, timeout=self.config.timeout_s) as response:
                data = response.read(MAX_IMAGE_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise CollectError(f"the image answered HTTP {error.code}") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise CollectError(f"the image is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        return data


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def iter_records(out: Path, split: str) -> Iterator[dict[str, Any]]:
    """The kept records of one split (for reports and tests)."""
    path = Path(out) / split / METADATA
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)
