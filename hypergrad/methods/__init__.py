"""Hypergradient methods: one module each, one shared interface (`Method`)."""

from hypergrad.methods.base import Method
from hypergrad.methods.implicit import Implicit
from hypergrad.methods.reverse import Reverse

__all__ = ["Implicit", "Method", "Reverse"]
