"""The playlist-cover application: playlist links, Spotify, prompts, storage, the CLI and the
Discord face.

Nothing in this package imports torch at import time; generation lives in :mod:`models`.
"""
