"""Walking jaxprs: the sub-programs an equation holds (the bodies of `scan`, `while`, `cond`,
`pjit`, `custom_vjp`, ...), for those that read a whole program (`hypergrad.accounting` counts its
FLOPs, `hypergrad._program_store` hashes its constants)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jax.extend import core as jcore

__all__ = ["sub_jaxprs"]


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
