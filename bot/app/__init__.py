"""The application core: everything a cover needs that is not Discord.

Links, playlists, prompts, storage, Spotify and the cover service live here. The faces – the
command line (:mod:`bot.__main__`), the Discord client (:mod:`bot.client` and :mod:`bot.cogs`)
and the OAuth callback server (:mod:`bot.oauth_callback`) – use this package; it never imports
them, nor ``discord`` (import-linter checks it: ``pyproject.toml``, docs/architecture.md).
"""
