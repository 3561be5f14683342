"""The fault test of shard processes: two real bot processes (``python -m bot run --shard-ids 0
--shard-count 2`` and ``--shard-ids 1``) on one PostgreSQL database (tests/postgres.py) and one
fake Discord with a server on each shard, the embedded model generating. A burst of /cover
requests across both servers; votes on the posts as they come; the process of one shard is
killed (SIGKILL: no goodbye, its queue lost mid-way) and started again. Nothing is lost,
nothing is posted twice, every vote is counted, and every command was acknowledged within
Discord's 3 seconds.

The burst is :data:`BURST` requests (half on each shard), two candidates each, one job per
pipeline call so the queue is still busy when the kill comes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.app.shards import Shards, shard_of
from bot.app.storage import Storage
from tests.fakes.discord import FakeDiscord, FakeUser, Message
from tests.fakes.spotify import CLIENT_ID, CLIENT_SECRET

BURST = 10
REPO = Path(__file__).resolve().parents[2]
REQUESTERS = [FakeUser(2000 + n, f"requester-{n}") for n in range(BURST)]
VOTERS = [FakeUser(3000 + n, f"voter-{n}") for n in range(3)]


class ShardProcess:
    """One ``python -m bot run`` of one shard, its output in a file."""

    def __init__(self, shard: int, env: dict[str, str], log: Path) -> None:
        self.shard, self.env, self.log = shard, env, log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                "--shard-ids",
                str(self.shard),
                "--shard-count",
                "2",
                env=self.env,
                cwd=self.log.parent,
                stdout=out,
                stderr=out,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def cover_posts(discord: FakeDiscord) -> dict[int, list[Message]]:
    """Every posted cover (a message carrying cover-N files), by the requester it names."""
    posts: dict[int, list[Message]] = {}
    for message in discord.channel_messages():
        if any(a.filename.startswith("cover-") for a in message.attachments):
            for user in REQUESTERS:
                if message.content.startswith(f"<@{user.id}>"):
                    posts.setdefault(user.id, []).append(message)
    return posts


async def test_a_killed_shard_process_loses_nothing_and_posts_nothing_twice(
    discord, fake_spotify, playlist_link, postgres_url, tmp_path, cache_dir, embedded_model_dir
):
    first = shard_of(discord.guild_id, 2)
    servers = {first: (discord.guild_id, discord.channel_id)}
    servers[1 - first] = discord.add_guild(shard=1 - first, shard_count=2)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "DISCORD_TOKEN": "fake-discord-token-do-not-print",
        "COVER_DISCORD_API_BASE": discord.api_base,
        "COVER_DISCORD_GATEWAY_URL": discord.gateway_url,
        "COVER_DB_URL": postgres_url,
        "COVER_OUTPUT_DIR": str(tmp_path / "covers"),
        "COVER_CACHE_DIR": str(cache_dir),
        "COVER_DEVICE": "cpu",
        "COVER_STATUS_EDIT_INTERVAL_S": "0",
        "COVER_COOLDOWN_S": "0",
        "COVER_QUEUE_MAX_BATCH": "1",
        "SPOTIFY_CLIENT_ID": CLIENT_ID,
        "SPOTIFY_CLIENT_SECRET": CLIENT_SECRET,
        "SPOTIFY_API_BASE": fake_spotify.api_base,
        "SPOTIFY_TOKEN_URL": fake_spotify.token_url,
    }
    processes = [ShardProcess(n, env, tmp_path / f"shard-{n}.log") for n in (0, 1)]
    victim = processes[1 - first]  # the shard of the added server
    expected: dict[str, dict[int, int]] = {}  # post → voter → choice

    async def until(condition, timeout: float, what: str):
        """``discord.wait_for``, failing with what was awaited, the posts so far and both
        processes' output instead of a bare TimeoutError."""
        try:
            return await discord.wait_for(condition, timeout=timeout)
        except TimeoutError:
            posted = {uid: len(ps) for uid, ps in cover_posts(discord).items()}
            logs = "\n".join(p.tail() for p in processes)
            raise AssertionError(f"{what} not within {timeout} s; posts {posted}\n{logs}") from None

    async def vote(post: Message, voter: int) -> None:
        choice = 1 + (voter + post.id) % 2
        await discord.react(VOTERS[voter], post.id, ["1️⃣", "2️⃣"][choice - 1])
        expected.setdefault(str(post.id), {})[VOTERS[voter].id] = choice

    try:
        for process in processes:
            await process.start()
        await until(
            lambda: discord.connected_shards() == [(0, 2), (1, 2)] and discord.commands,
            240,
            "both shards connected",
        )
        # 1. The burst: every requester at once, alternating between the two servers.
        asked = {}
        for n, user in enumerate(REQUESTERS):
            channel = servers[n % 2][1]
            asked[user.id] = await discord.slash(
                user, "cover", channel_id=channel, playlist=playlist_link, count=2
            )
        victims = [u.id for n, u in enumerate(REQUESTERS) if n % 2 == victim.shard]

        # 2. The victim's first post: a vote on it, then SIGKILL while its queue is busy.
        def victim_posted() -> list[Message]:
            return [p for uid, ps in cover_posts(discord).items() if uid in victims for p in ps]

        (seen, *_) = await until(victim_posted, 240, "the victim's first post")
        await vote(seen, 0)
        await until(lambda: len(discord.reactions.get(seen.id, [])) >= 3, 30, "its reactions")
        victim.kill()
        await asyncio.wait_for(victim.process.wait(), 30)
        with Storage(postgres_url) as storage:
            left = storage.unfinished_requests("discord", Shards((victim.shard,), 2))
        assert left, "the victim finished its queue before the kill: nothing was mid-queue"
        # Votes while it is down reach it only as state, read back at its next READY.
        for post in victim_posted():
            await vote(post, 1)

        # 3. Started again: it resumes what was queued, and counts what changed meanwhile.
        await victim.start()
        await until(lambda: len(cover_posts(discord)) == BURST, 240, "every request posted")
        posts = cover_posts(discord)
        for post in [p for ps in posts.values() for p in ps]:
            await vote(post, 2)
        with Storage(postgres_url) as storage:

            def counted() -> bool:
                return all(
                    storage.vote_of(message_id, str(voter)) == choice
                    for message_id, ballots in expected.items()
                    for voter, choice in ballots.items()
                )

            await until(counted, 60, "every vote counted")
            await asyncio.sleep(2)  # time for a second post, or a stray vote change, to show
            rows = [storage.request(m.request_id) for m in storage.open_cover_messages()]
            statuses = sorted(r.status for r in rows)
            resumed = sum(r.resumes for r in rows)
            assert counted()
    finally:
        for process in processes:
            await process.stop()
    logs = "\n".join(p.tail() for p in processes)
    # Nothing lost, nothing twice: one post per request, one vote per post.
    posts = cover_posts(discord)
    assert sorted(posts) == sorted(u.id for u in REQUESTERS), logs
    assert all(len(ps) == 1 for ps in posts.values()), logs
    assert statuses == ["done"] * BURST
    assert 1 <= resumed <= len(left)
    # Every command was acknowledged in time, before and after the kill.
    for interaction in asked.values():
        assert interaction.acked_at is not None, logs
        assert interaction.acked_at - interaction.sent_at < 3.0
    assert "Traceback" not in logs, logs
    slowest = max(i.acked_at - i.sent_at for i in asked.values())
    print(  # shown with -rP: what the kill hit
        f"{BURST} requests; {len(left)} still queued at the kill, {resumed} resumed; "
        f"{sum(len(b) for b in expected.values())} votes; slowest ack {slowest:.3f} s"
    )
