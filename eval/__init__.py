"""`python -m eval`: see `eval/__main__.py`."""
