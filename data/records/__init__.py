"""The record format: one video per ArrayRecord record (codec.py) and the converted dataset on disk (shards.py)."""
