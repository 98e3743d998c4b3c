"""The HTTP surface: one router per resource in `routes/`, dependencies in `deps.py`."""
