"""The MOVi variants every paper config comes in, and what differs between them.

MOVi-A, B and C hold 3 to 10 objects per video; D and E up to 23 (10 to 20 static and 1 to 3 moving ones; E's
camera moves). Conditioned models get one slot per object plus the background, so max_instances follows the
variant: 10 for A-C and 23 for D-E. SAVi's own configs keep 23 for every variant.
"""

from __future__ import annotations

VARIANTS = ("movi_a", "movi_b", "movi_c", "movi_d", "movi_e")
MOST_OBJECTS = {"movi_a": 10, "movi_b": 10, "movi_c": 10, "movi_d": 23, "movi_e": 23}


def check(variant: str) -> str:
    """The variant name, or a ValueError that lists the valid ones (`--config FILE:movi_c`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MOVi variant {variant!r}: pass one of {', '.join(VARIANTS)} as --config "
                         f"FILE.py:VARIANT, e.g. configs/statm_savi_pp.py:movi_c")
    return variant


def few_objects(variant: str) -> bool:
    return MOST_OBJECTS[check(variant)] <= 10
