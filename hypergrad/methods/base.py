"""The shared interface of hypergradient methods.

A method is an immutable strategy object passed as `method=` (as optimistix's `adjoint=`). It
computes the validation loss, the scores of the trained parameters and an (exact or estimated)
gradient of the loss with respect to the hyperparameters, as a pure function that can be traced,
jitted and vmapped.

A method is written against the narrow training loop of one training set (`hypergrad.loop.Loop`:
`init`, `step`, `readout`, `num_steps`, plus the structure some methods exploit) and nothing else:
subclasses implement `differentiate(loop, hparams, key)` and, optionally, `check_loop`.
A method whose estimate is random beyond the training key (`ES`, `PES`: it draws perturbations)
sets `random_estimate = True` and takes `differentiate(loop, hparams, key, noise_key=None)`: the
key its noise is drawn from, by default `perturbation_key(key)`. The outer driver passes a fresh
one at every outer step (`hypergrad.outer.step_noise_key`), so the steps' estimates are
independent while the training key, and so the objective, stays fixed.
Cross-validation is the wrapper `value_and_grad` puts around every method: one loop per fold,
vmapped, the value and gradient averaged over folds (`hypergrad.folds`).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax

from hypergrad._types import HParams, Key, PyTree, Scalar
from hypergrad.folds import over_folds
from hypergrad.loop import Loop

__all__ = ["Method", "refusing_derivatives", "PERTURBATION_STREAM", "perturbation_key"]

PERTURBATION_STREAM = 2**31 - 2
"""fold_in tag separating the perturbation key from the training key (search uses 2**31 - 1)."""


def perturbation_key(key: Key) -> Key:
    """The noise key of a random-estimate method given only the training `key` (`hg.hypergradient`,
    a tune's first step): `fold_in(key, PERTURBATION_STREAM)`."""
    return jax.random.fold_in(key, PERTURBATION_STREAM)


class Method(abc.ABC):
    """Abstract base of hypergradient strategies.

    Subclasses are frozen dataclasses whose fields are hashable (`@dataclasses.dataclass(frozen=True)`;
    an array or list setting stored as a tuple of Python numbers, or passed as a hyperparameter): the
    library keys its compiled programs and FLOP counts on the method by value, so equal methods share
    one compilation. An unhashable method (a list or array field, a dataclass that is not frozen) is
    refused with a TypeError naming `method=` before its program is traced or compiled. A plain
    (non-dataclass) subclass hashes by identity: it runs, but each new instance compiles its programs
    anew and reads as `<... object at 0x...>` in reports, so make it a frozen dataclass (or build one
    instance and reuse it).
    """

    random_estimate: ClassVar[bool] = False
    """True for a method whose estimate is random given the training key (a Monte Carlo estimate:
    `ES`, `PES`); its `differentiate` then takes `noise_key=` (None: `perturbation_key(key)`)."""

    @abc.abstractmethod
    def differentiate(self, loop: Loop, hparams: HParams, key: Key
                      ) -> tuple[tuple[Scalar, dict[str, Scalar]], HParams]:
        """((validation loss, scores of the trained parameters), d loss / d hparams) on one
        training set. Pure and traceable."""

    def check_loop(self, loop: Loop, hparams: HParams) -> None:  # noqa: B027 - optional hook
        """Raises `ValueError`, before anything compiles, for a combination it cannot handle
        (`loop` holds concrete data; `hparams` may be traced)."""

    def value_and_grad(
        self, objective: Any, hparams: HParams, key: Key, data: Mapping[str, PyTree], noise_key: Key | None = None,
        check_fold: Callable[[Any], Any] | None = None,
    ) -> tuple[tuple[Scalar, dict[str, Scalar]], HParams]:
        """((validation loss, scores), d loss / d hparams) of `objective`: `differentiate` on its
        loop, or under cross-validation on each fold's loop, vmapped, with the value and the
        gradient averaged over the folds (the gradient of the fold mean is the mean of the fold
        gradients) and the scores aggregated (`hypergrad.folds`).

        Pure and traceable. `data` holds the problem's splits as explicit arrays (`problem.data`).
        `noise_key`, for a method with `random_estimate` only, is the key its noise is drawn from
        (the same for every fold, as the training key is); None derives it from `key`.
        `check_fold`, under cross-validation, checks each fold's output before the folds are
        averaged (`hypergrad.folds.over_folds`'s `check`); without folds the caller checks the output.
        """
        if noise_key is None:
            def differentiate(loop):
                return self.differentiate(loop, hparams, key)
        elif self.random_estimate:
            def differentiate(loop):
                return self.differentiate(loop, hparams, key, noise_key=noise_key)
        else:
            raise TypeError(f"{self!r}.value_and_grad(noise_key=...): this method's estimate is not random "
                            "(random_estimate is False), so it draws no noise; pass noise_key=None")
        return over_folds(objective.problem, data, lambda split: differentiate(objective.loop(split)),
                          has_grads=True, check=check_fold)

    def check(self, objective: Any, hparams: HParams) -> None:
        """Raises `ValueError`, before anything compiles, for a combination it cannot handle."""
        self.check_loop(objective.loop(), hparams)


def refusing_derivatives(hparams: HParams, method: Method, why: str) -> HParams:
    """`hparams` unchanged, except that differentiating anything computed from them (jax.grad,
    jacfwd, jacrev, jvp, hessian of a hypergradient, under jit too) raises a ValueError naming
    `method`, `why` its result has no true derivative, and the fix. For methods whose value and
    grads have no derivative path, or only a partial one, back to the hyperparameters (integer
    arithmetic, `stop_gradient`), where autodiff would return 0 or a wrong number silently.

    An identity (a `jax.custom_jvp` whose rule refuses): jit and vmap see the plain values, free.
    Only differentiation with respect to `hparams` is caught; a value the objective closes over
    (`with_fixed` of a traced value) is not seen.
    """
    return _refuse_derivatives(f"{method!r}", why, hparams)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _refuse_derivatives(method: str, why: str, hparams: HParams) -> HParams:
    return hparams


@_refuse_derivatives.defjvp
def _refuse_derivatives_jvp(method: str, why: str, primals, tangents):
    raise ValueError(
        f"hg.hypergradient(..., method={method}) cannot be differentiated (jax.grad, jacfwd, jacrev, "
        f"jvp or hessian of its value or grads): {why}, so autodiff would give a silently wrong "
        "derivative. Use method=hg.Reverse() or hg.Forward() for derivatives of a hypergradient "
        "(plain autodiff, exact to second order); the first derivative of the value is the "
        "returned grads")
