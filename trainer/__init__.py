"""The training loop and everything it needs; knows nothing of MOVi's TFDS format."""
