"""flax.nnx layers in fine-tuning (hunt N): a recurrent layer that draws random numbers in eval mode
is refused for what it does (not as "a model in train mode"), and `finetune(dtype=float64)` warns
when a layer still computes in float32 (nnx.Embed, attention's softmax). Every check traces the
model abstractly; nothing compiles."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.nnx.nn import attention as nnx_attention

import hypergrad as hg

HIDDEN, CLASSES = 3, 3
RNG_DRAW = r"draws random numbers from a flax\.nnx model's RNG state.*in {cell}\.initialize_carry.*initial_carry="


class Recurrent(nnx.Module):
    """nnx.RNN over a cell, then a linear head on the last step; with `carry` the initial carry is
    passed (zeros in the inputs' dtype), else nnx.RNN draws one from the cell's rngs."""

    def __init__(self, rngs, cell="LSTMCell", carry=False):
        self.rnn = nnx.RNN(getattr(nnx, cell)(2, HIDDEN, rngs=rngs))
        self.head = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)
        self.carry, self.pieces = carry, 2 if cell == "LSTMCell" else 1

    def __call__(self, x):
        zeros = jnp.zeros((x.shape[0], HIDDEN), x.dtype)
        carry = (zeros,) * self.pieces if self.pieces > 1 else zeros
        return self.head(self.rnn(x, initial_carry=carry if self.carry else None)[:, -1])


def _sequences(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return tuple((rng.normal(size=(n, 4, 2)), rng.integers(0, CLASSES, n)) for _ in range(3))


def _split(model):
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return params, lambda p, x: nnx.merge(graphdef, p, rest)(x)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_an_rnn_without_initial_carry_is_refused_as_an_rng_draw_not_as_train_mode(cell):
    """model.eval() was called, yet finetune said "a model in train mode" and advised model.eval():
    nnx.RNN draws a key from its cell's rngs for the carry in eval mode too. The refusal now names
    the draw, the layer, and the fix (initial_carry=), which trains."""
    params, apply = _split(Recurrent(nnx.Rngs(0), cell))
    with pytest.raises(ValueError, match=RNG_DRAW.format(cell=cell)) as refused:
        hg.problems.finetune(params, _sequences(), apply)
    assert "train mode" not in str(refused.value) and "call model.eval() first" not in str(refused.value)
    params, apply = _split(Recurrent(nnx.Rngs(0), cell, carry=True))
    hg.problems.finetune(params, _sequences(), apply)  # the advised fix is accepted


def test_nnx_problem_and_a_hand_built_problem_name_the_rng_draw_too():
    """The same wrong advice came from nnx_problem and from a plain hg.Problem's first trace."""
    train, val, _ = _sequences()

    def make_model(rngs):
        model = Recurrent(rngs)
        model.eval()
        return model

    with pytest.raises(ValueError, match=r"nnx_problem\(make_model=...\).*" + RNG_DRAW.format(cell="LSTMCell")):
        hg.problems.nnx_problem(make_model, train, val)
    params, apply = _split(Recurrent(nnx.Rngs(0)))
    problem = hg.Problem(init=lambda key: params, train_loss=lambda p, h, b: apply(p, b[0]).sum(),
                         val_loss=lambda p, b: apply(p, b[0]).sum(), train_data=train, val_data=val)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    with pytest.raises(ValueError, match=r"Problem\(train_loss=...\).*" + RNG_DRAW.format(cell="LSTMCell")):
        jax.make_jaxpr(lambda h: objective(h, jax.random.key(0)))({"lr": jnp.asarray(0.1)})


def test_train_mode_dropout_keeps_the_train_mode_refusal():
    """Dropout's draws are train mode's: that refusal, with its advice to call model.eval(), stays."""
    class Dropped(nnx.Module):
        def __init__(self, rngs):
            self.drop, self.head = nnx.Dropout(0.5, rngs=rngs), nnx.Linear(2, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.head(self.drop(x[:, -1]))

    model = Dropped(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    with pytest.raises(ValueError, match=r"RngCount.*as a model in train mode does.*call model\.eval\(\) first"):
        hg.problems.finetune(params, _sequences(), lambda p, x: nnx.merge(graphdef, p, rest)(x))


class Tokens(nnx.Module):
    """Embed -> (attention) -> mean -> Linear; `wide` builds the embedding and attention in float64,
    `attention_fn` replaces the attention's default."""

    def __init__(self, rngs, attention=False, wide=False, attention_fn=None):
        wide_kw = {"dtype": jnp.float64, "param_dtype": jnp.float64} if wide else {}
        self.embed = nnx.Embed(10, 4, rngs=rngs, **wide_kw)
        extra = {} if attention_fn is None else {"attention_fn": attention_fn}
        self.attend = (nnx.MultiHeadAttention(2, 4, 4, decode=False, rngs=rngs, **wide_kw, **extra)
                       if attention else None)
        self.head = nnx.Linear(4, CLASSES, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x)
        h = h if self.attend is None else self.attend(h)
        return self.head(jnp.tanh(h).mean(1))


def _tokens(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return tuple((rng.integers(0, 10, (n, 5)), rng.integers(0, CLASSES, n)) for _ in range(3))


def _float64_attention(query, key, value, bias=None, mask=None, **unused):
    weights = nnx_attention.dot_product_attention_weights(query, key, bias, mask)
    return jnp.einsum("...hqk,...khd->...qhd", weights, value)


def _warnings_of(model, **kwargs):
    params, apply = _split(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hg.problems.finetune(params, _tokens(), apply, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_float64_finetune_warns_when_embed_or_attention_computes_in_float32():
    """finetune(dtype=float64) cast the parameters, but nnx.Embed (dtype fixed at its float32
    param_dtype) and attention's softmax kept computing in float32, so float64 finite differences
    never converged (26% off) and nothing said why. Now it warns, naming the layer and the fix."""
    (embed,) = _warnings_of(Tokens(nnx.Rngs(0)), dtype=jnp.float64)
    assert re.search(r"casts to float32 in Embed\.__call__.*dtype=jnp\.float64 and param_dtype=jnp\.float64", embed)
    assert "attention_fn" not in embed
    (both,) = _warnings_of(Tokens(nnx.Rngs(0), attention=True), dtype=jnp.float64)
    assert "Embed.__call__, MultiHeadAttention.__call__" in both and "attention_fn" in both
    (attention,) = _warnings_of(Tokens(nnx.Rngs(0), attention=True, wide=True), dtype=jnp.float64)
    assert "(casts to float32 in MultiHeadAttention.__call__):" in attention


def test_no_warning_when_every_layer_computes_in_the_dtype_or_none_is_given():
    assert _warnings_of(Tokens(nnx.Rngs(0), wide=True), dtype=jnp.float64) == []
    wide = Tokens(nnx.Rngs(0), attention=True, wide=True, attention_fn=_float64_attention)
    assert _warnings_of(wide, dtype=jnp.float64) == []
    assert _warnings_of(Tokens(nnx.Rngs(0))) == []  # no dtype=: nothing promised
