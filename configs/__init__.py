"""Plain ml_collections `get_config()` files; each docstring holds its command line."""
