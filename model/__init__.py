"""Flax modules for STATM-SAVi and SAVi; knows nothing of data files or the trainer."""
