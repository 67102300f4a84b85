"""Hypergradient methods: one module each, one shared interface (`Method`)."""

from hypergrad.methods.base import Method
from hypergrad.methods.es import ES, PES
from hypergrad.methods.forward import Forward
from hypergrad.methods.implicit import Implicit
from hypergrad.methods.reverse import Reverse
from hypergrad.methods.reversible import Reversible, ReversibleRun
from hypergrad.methods.truncated import Truncated

__all__ = ["ES", "PES", "Forward", "Implicit", "Method", "Reverse", "Reversible", "ReversibleRun", "Truncated"]
