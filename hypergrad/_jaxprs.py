"""Walking jaxprs: the sub-programs an equation holds (the bodies of `scan`, `while`, `cond`,
`pjit`, `custom_vjp`, ...), for those that read a whole program (`hypergrad.accounting` counts its
FLOPs, `hypergrad._program_store` hashes its constants), and which of a program's inputs it never
reads (`hypergrad._indexing` warns of a hyperparameter the objective ignores)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jax.extend import core as jcore

__all__ = ["sub_jaxprs", "unread_inputs"]


def sub_jaxprs(params: Mapping[str, Any]) -> list[tuple[Any, list]]:
    """(jaxpr, consts) of every sub-program among an equation's parameters (consts empty for an
    open `Jaxpr`)."""
    out = []
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jcore.ClosedJaxpr):
                out.append((item.jaxpr, item.consts))
            elif isinstance(item, jcore.Jaxpr):
                out.append((item, []))
    return out


def unread_inputs(jaxpr: Any) -> list[int]:
    """Positions of `jaxpr`'s inputs (a `Jaxpr` or `ClosedJaxpr`) that the program never reads: no
    equation takes them and no output is one. An equation holding one sub-program that takes its
    inputs one for one (`jit`, `scan`, `remat`, `custom_jvp`, ...) is looked into, so an input
    passed into a `jit` or a loop and ignored there counts as unread; any other equation (`while`,
    `cond`) reads all it takes. A read whose result is then discarded still counts as a read (no
    dead-code elimination): it never calls an input unread that the program uses. Cost: one walk of
    the equations, sub-programs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    read = {id(v) for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    for eqn in jaxpr.eqns:
        inner = sub_jaxprs(eqn.params)
        if len(inner) == 1 and len(inner[0][0].invars) == len(eqn.invars):
            unread = set(unread_inputs(inner[0][0]))
            read |= {id(v) for i, v in enumerate(eqn.invars) if i not in unread and isinstance(v, jcore.Var)}
        else:
            read |= {id(v) for v in eqn.invars if isinstance(v, jcore.Var)}
    return [i for i, v in enumerate(jaxpr.invars) if id(v) not in read]
