"""Property-based tests of snapshot loading: any JSON in the file gives facts or our own
:class:`SnapshotError`, never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.app.errors import SnapshotError
from bot.app.playlist import PlaylistFacts, load_snapshot
from tests.properties import examples

EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "examples/playlists/gym-hype.json").read_text("utf-8")
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
# Spotify-shaped snapshots with one field swapped for anything: the interesting failures.
fields = st.sampled_from(
    ["id", "name", "description", "owner", "images", "items", "tracks", "artists"]
)
mutated = st.builds(lambda key, value: {**EXAMPLE, key: value}, fields, json_values)
nested = st.builds(
    lambda key, value: {**EXAMPLE, "items": {"items": [{key: value}]}},
    st.sampled_from(["item", "track"]),
    json_values,
)


@settings(max_examples=examples(400), deadline=None)
@given(data=st.one_of(json_values, mutated, nested))
def test_any_json_gives_facts_or_a_snapshot_error(data) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "snapshot.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        try:
            facts = load_snapshot(path)
        except SnapshotError as error:
            assert str(error).startswith(str(path)) and "\n" not in str(error)
            return
    assert isinstance(facts, PlaylistFacts) and facts.name
