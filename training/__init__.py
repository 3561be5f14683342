"""`python -m training`: see `training/__main__.py`."""
