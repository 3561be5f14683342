"""The subcommands of ``python -m training``, by area; training/__main__.py dispatches."""
