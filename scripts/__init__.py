"""Helper commands run as modules (`python -m scripts.fetch_weights`); the .sh files here wrap the entry points."""
