"""The shard rule (bot/app/shards.py) and the settings and command line that choose shards."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.app.settings import Settings
from bot.app.shards import MAX_SHARD_COUNT, Shards, parse_shard_ids, shard_of

SNOWFLAKES = st.integers(min_value=0, max_value=2**63 - 1)


def test_the_formula_is_discords() -> None:
    # discord-api-docs, Sharding: shard_id = (guild_id >> 22) % num_shards
    guild = 81384788765712384  # Discord API's own server
    # 81384788765712384 >> 22 == 19403645698 (its creation time in ms since 2015)
    assert [shard_of(guild, n) for n in (1, 2, 3, 5, 16)] == [0, 0, 1, 3, 2]
    assert shard_of(str(guild), 5) == 3  # as the database stores it
    assert shard_of(None, 5) == shard_of("", 5) == 0  # no server: shard 0, as DMs are


@given(SNOWFLAKES, st.integers(min_value=1, max_value=64))
def test_every_server_has_exactly_one_owner_among_a_full_layout(guild: int, count: int) -> None:
    processes = [Shards((i,), count) for i in range(count)]
    assert [p.owns(guild) for p in processes].count(True) == 1
    assert Shards.every().owns(guild)


@given(st.text(max_size=30))
def test_shard_ids_parse_or_say_what_is_wrong(text: str) -> None:
    try:
        ids = parse_shard_ids(text)
    except ValueError as error:
        assert "shard ids" in str(error)
    else:
        assert ",".join(map(str, ids)) == ",".join(str(int(p)) for p in text.split(","))


@pytest.mark.parametrize("bad", ["abc", "-5", "1.5", "0x10"])
def test_a_server_id_that_is_not_one_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="guild_id"):
        shard_of(bad, 2)


def test_settings_read_the_layout_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("COVER_SHARD_IDS", "0, 2")
    monkeypatch.setenv("COVER_SHARD_COUNT", "4")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.shards() == Shards((0, 2), 4)
    assert settings.shards().describe() == "shards 0, 2 of 4"


def test_no_layout_is_one_process_with_every_shard() -> None:
    shards = Settings(_env_file=None).shards()  # type: ignore[call-arg]
    assert shards.everything and shards.describe() == "every shard"


@pytest.mark.parametrize(
    ("ids", "count", "says"),
    [
        ("0,0", 2, "unique"),
        ("2", 2, "0 to 1"),
        ("0", 0, "shard count must be 1"),
        ("0", MAX_SHARD_COUNT + 1, "shard count must be 1"),
        ("1", None, "COVER_SHARD_COUNT"),
        ("one", 2, "numbers separated by commas"),
    ],
)
def test_a_bad_layout_is_refused_saying_why(ids: str, count: int | None, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(_env_file=None, shard_ids=ids, shard_count=count)  # type: ignore[call-arg]


def test_a_refused_database_url_never_shows_its_password() -> None:
    for url in ("mysql://me:hunter2-secret@db/covers", "me:hunter2-secret@db/covers"):
        with pytest.raises(ValidationError) as caught:
            Settings(_env_file=None, db_url=url)  # type: ignore[call-arg]
        shown = str(caught.value) + repr(caught.value)
        assert "hunter2" not in shown and "db_url" in shown


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--shard-ids", "0,0", "--shard-count", "2"], "shard ids must be unique, got 0 twice"),
        (["--shard-ids", "2", "--shard-count", "2"], "must be 0 to 1 with a shard count of 2"),
        (["--shard-ids", "1"], "needs COVER_SHARD_COUNT (--shard-count)"),
    ],
)
def test_run_refuses_a_bad_layout_in_one_line_before_connecting(
    argv: list[str], says: str, monkeypatch, tmp_path, capsys
) -> None:
    from bot.__main__ import main

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("DISCORD_TOKEN", "fake-token")
    monkeypatch.delenv("COVER_SHARD_IDS", raising=False)
    monkeypatch.delenv("COVER_SHARD_COUNT", raising=False)
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid setting") and says in err and err.count("\n") == 1


def test_run_help_shows_the_shard_options(capsys) -> None:
    from bot.__main__ import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--shard-ids" in out and "--shard-count" in out
