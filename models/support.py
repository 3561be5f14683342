"""The support models' folders: a local folder as given, else the hub id's snapshot in the local
Hugging Face cache, or a message naming the model and the command that fetches it. What the
support models are (a captioner, CLIP, a prompt expander) is data in models/presets.py.

    name ─► SupportModel (models/presets.py) ─► snapshot in the Hugging Face cache
                                             │   (models/hub.py)
                                             └► ModelUnavailable naming the model and the
                                                command that fetches it

They are loaded from the local Hugging Face cache exactly like the hub presets:
``python -m bot models pull clip`` fetches one, and ``modeltools/standins/`` writes
architecture-faithful stand-ins of all three for tests. A user may also give a local folder
instead of a hub id (a fine-tuned expander, say).
"""

from __future__ import annotations

from pathlib import Path

from models.errors import ModelUnavailable
from models.hub import fetch_command, hf_cache_dir, repo_state
from models.presets import support_model


def fetch_hint(repo_id: str) -> str:
    """How to get ``repo_id`` into the cache, as a clause for a message."""
    return f"fetch it with {fetch_command(repo_id)} on a machine with network"


def model_folder(name: str, *, role: str) -> Path:
    """The folder to load the support model ``name`` from: a local folder as given, else the
    hub id's snapshot in the local cache. Raises :class:`ModelUnavailable` naming the model, its
    role and how to fetch it when it is not there (nothing is downloaded here)."""
    known = support_model(name)
    repo_id = known.repo_id if known else name
    local = Path(repo_id).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelUnavailable(f"The {role} model folder {str(local)!r} has no config.json.")
        return local
    if repo_id.count("/") != 1:
        raise ModelUnavailable(
            f"The {role} model {name!r} is neither a folder nor a Hugging Face hub id (ORG/NAME)."
        )
    state = repo_state(repo_id)
    if not state.cached or state.snapshot is None:
        raise ModelUnavailable(
            f"The {role} model {repo_id} is not in the local Hugging Face cache "
            f"({hf_cache_dir()}); {fetch_hint(repo_id)}."
        )
    return state.snapshot


def is_available(name: str) -> bool:
    """Whether :func:`model_folder` would find ``name`` (no loading, no download)."""
    try:
        model_folder(name, role="support")
    except ModelUnavailable:
        return False
    return True
