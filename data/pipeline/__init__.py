"""The Grain input pipeline: datasets and iterators (datasets.py) over SAVi's ops (transforms.py), with the
train chain's per-pixel work compiled in one pass (fused.py)."""
