"""An analytic FLOP count, independent of XLA's cost analysis that trainer/mfu.py uses: the matrix products and
convolutions of a function's jaxpr, 2 x (output elements) x (contraction size) each, with a scan's body counted
once per iteration of its trip count and every nested jaxpr (jit, remat, custom derivatives) entered."""

from __future__ import annotations

import math

import jax
from jax.extend import core


def _eqn_flops(eqn) -> int:
    name = eqn.primitive.name
    if name == "dot_general":
        (contracting, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
    if name == "conv_general_dilated":  # per output element: the kernel's taps x its input features
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec
        rhs = eqn.invars[1].aval.shape
        return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs[d] for d in rhs_spec[1:])
    return 0


def _subjaxprs(value):
    for v in value if isinstance(value, tuple | list) else (value,):
        if isinstance(v, core.ClosedJaxpr):
            yield v.jaxpr
        elif isinstance(v, core.Jaxpr):
            yield v


def jaxpr_flops(jaxpr: core.Jaxpr, times: int = 1) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += times * _eqn_flops(eqn)
        inner = times * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
        for value in eqn.params.values():
            total += sum(jaxpr_flops(sub, inner) for sub in _subjaxprs(value))
    return total


def matmul_and_conv_flops(fn, *args) -> int:
    """FLOPs of `fn`'s matrix products and convolutions on these (possibly abstract) arguments."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
