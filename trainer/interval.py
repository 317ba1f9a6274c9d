"""Training metrics averaged over each logging interval, as SAVi and the original report them.

Every step's loss, loss parts and gradient norm are merged into a `clu.metrics` collection of averages, on the
devices (no host sync per step); each log step writes the means since the last one. A step whose update was
skipped (non-finite loss or gradient, config.nonfinite_updates) is left out of the means: the skip is counted
in `skipped_updates` instead. The learning rate is the logged step's own, not a mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics

NOT_AVERAGED = ("finite", "learning_rate")


def _collection(names: tuple[str, ...]) -> type:
    def average(name):
        return clu_metrics.Average.from_fun(
            lambda mask, **out: {"values": jnp.reshape(out[name], (1,)), "mask": mask})  # [value], [finite]

    return clu_metrics.Collection.create(**{name: average(name) for name in names})


class Interval:
    """`add(metrics)` after every step; `means(metrics)` at a log step: the interval's means, then a new one."""

    def __init__(self):
        self._merged = None
        self._add = None

    def add(self, metrics: dict) -> None:
        if self._add is None:  # one jitted dispatch per step: the merge of the step into the interval
            names = tuple(sorted(k for k in metrics if k not in NOT_AVERAGED))
            collection = _collection(names)

            def add(merged, step_metrics):
                one = collection.single_from_model_output(
                    mask=jnp.reshape(step_metrics["finite"], (1,)), **{k: step_metrics[k] for k in names})
                return one if merged is None else merged.merge(one)

            self._add = (jax.jit(lambda m: add(None, m)), jax.jit(add))
        self._merged = self._add[0](metrics) if self._merged is None else self._add[1](self._merged, metrics)

    def means(self, metrics: dict) -> dict[str, float]:
        """The interval's means (NaN for one whose every step was skipped), with the step's learning rate."""
        out = {k: float(v) for k, v in jax.device_get(self._merged.compute()).items()}
        if "learning_rate" in metrics:
            out["learning_rate"] = float(jax.device_get(metrics["learning_rate"]))
        self._merged = None
        return out
