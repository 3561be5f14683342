"""Slash commands and listeners, one cog per command group."""
