"""The engine interface: everything the model, sampling and training ask of an engine.

An engine holds microgpt's weights (flat, in state-dict order: see params.py) and builds the
graph of one sequence, op by op, as ``model.py`` calls it.  Three engines implement it
(the registry in engines/__init__.py maps the backend names to them):

    backend   class                         Vector           Matrix               Scalar
    python    reference.ReferenceEngine     list of Value    list of rows (lists)  Value
    cython    compiled.GraphEngine           _ops.Vec         _ops.Mat              Vec of size 1
    fused     fused.FusedEngine              as cython: a GraphEngine whose training pass is loops

Vector, Matrix and Scalar are opaque handles: the model only passes them back to the same
engine, never looks inside.  A handle built after ``begin_sequence`` belongs to that
sequence; the next ``begin_sequence`` invalidates it (the compiled engine refuses it then).
Weight rows and matrices (``row``, ``matrix``) stay valid for the engine's whole life.

Every op must produce exactly the values (float ``==``) of microgpt's Python expression it
names, and a graph whose backward gives exactly microgpt's gradients: the reference is the
definition, the parity tests hold the compiled engine to it.

Shapes in the docstrings: E = n_embd, F = 4 * E, V = vocab_size, T = positions so far.
``tests/test_engine_interface.py`` checks that both engines have every method below, with
the same parameter names, and that a training pass and sampling use nothing else.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeAlias, Union, runtime_checkable

if TYPE_CHECKING:  # the reference engine runs without NumPy: no import at run time
    import numpy as np

    from ..config import GPTConfig

Vector: TypeAlias = Any  # an engine's handle on a vector of graph nodes (see the table above)
Matrix: TypeAlias = Any  # an engine's handle on a weight matrix, rows = output features
Scalar: TypeAlias = Any  # an engine's handle on one graph node (a loss)
Floats: TypeAlias = Union[Sequence[float], "np.ndarray"]  # flat, state-dict order: a list or a float64 array


@runtime_checkable
class Optimizer(Protocol):
    """microgpt's Adam over one engine's weights (betas, eps: config.py), linear lr decay."""

    def step(self, step_index: int, num_steps: int) -> None:
        """Apply one update with the gradients the last backward left, then zero them.
        FloatingPointError, changing nothing, where a gradient is nan or infinite (training
        stops there: microgpt's loop would write nan into the weights).

        `step_index` is the 0-based index of the step being finished, `num_steps` the run's
        length: they give the step's learning rate and bias corrections (schedule.py).
        Bit-identical to microgpt's per-parameter loop."""

    def moments(self) -> tuple[Floats, Floats]:
        """Copies of the first and second moment buffers (m, v), flat, state-dict order."""

    def set_moments(self, m: Sequence[float], v: Sequence[float]) -> None:
        """Replace both moment buffers (a resumed run), flat, state-dict order; ValueError,
        changing neither, where either holds another number of values than there are weights."""


@runtime_checkable
class Engine(Protocol):
    """The vector operations of microgpt's model, its backward, and its weights."""

    # --- weights (leaf nodes that live as long as the engine) ---------------------------
    def row(self, name: str, index: int) -> Vector:
        """Row `index` of weight matrix `name` as a vector: an embedding lookup, (E,)."""

    def matrix(self, name: str) -> Matrix:
        """Weight matrix `name` (params.state_dict_layout's names), for `linear`."""

    def weights(self) -> list[float]:
        """Every weight as a float, flat, state-dict order (a copy)."""

    def set_weights(self, weights: Sequence[float]) -> None:
        """Overwrite every weight, flat, state-dict order."""

    def gradients(self) -> list[float]:
        """d(loss)/d(weight) accumulated by `backward` since the last zeroing, flat, state-dict order."""

    def zero_grad(self) -> None:
        """Set every weight's gradient to 0."""

    # --- graph ops: microgpt's functions, one call per vector expression -----------------
    def add(self, a: Vector, b: Vector) -> Vector:
        """a + b elementwise, (n,) + (n,) -> (n,): the residual and the embedding sum."""

    def linear(self, x: Vector, w: Matrix) -> Vector:
        """w @ x, (cols,) -> (rows,): each output sum(wi * xi), from 0, left to right."""

    def relu(self, x: Vector) -> Vector:
        """max(0, x) elementwise, (n,) -> (n,); local gradient float(x > 0)."""

    def rmsnorm(self, x: Vector) -> Vector:
        """x * (mean(x * x) + RMSNORM_EPS) ** -0.5, (n,) -> (n,); no learned gain."""

    def attention(self, q: Vector, keys: list[Vector], values: list[Vector], n_head: int) -> Vector:
        """Multi-head attention of the query q, (E,), over the T cached keys and values
        (each (E,)); per head softmax(q_h . k_h / head_dim**0.5) weights the v_h: (E,)."""

    def nll(self, logits: Vector, target: int) -> Scalar:
        """-log(softmax(logits)[target]), (V,) -> scalar: one position's loss."""

    def mean(self, losses: list[Scalar]) -> Scalar:
        """(1 / n) * sum(losses): the sequence's loss."""

    def backward(self, loss: Scalar) -> float:
        """Accumulate d(loss)/d(node) into every node, in microgpt's depth-first order
        (weights included: see `gradients`); returns the loss as a float."""

    def forward_backward(self, config: "GPTConfig", tokens: Sequence[int]) -> float:
        """A training pass: ``model.forward_backward(self, config, tokens)``, its loss, the
        gradients accumulated.  The compiled engine replays a recorded pass instead of
        running the model again where it can (engines/compiled.py), the fused engine runs
        graph-free loops (engines/fused.py): the same result."""

    def training_pass(self, config: "GPTConfig") -> Callable[[Sequence[int]], float]:
        """``forward_backward`` with `config` bound, for a run's every step: the fused
        engine's is its compiled loops' own method, no Python between the step and them."""

    # --- sequences and sampling ----------------------------------------------------------
    def begin_sequence(self, record: bool = True) -> None:
        """Drop the previous sequence's graph; `record=False`: compute values only
        (sampling), so no backward is possible until the next begin_sequence(True)."""

    def probs(self, logits: Vector, temperature: float) -> list[float]:
        """softmax(logits / temperature) as floats, (V,), recording no graph: the
        weights microgpt hands to random.choices."""

    # --- optimizer -------------------------------------------------------------------------
    def make_optimizer(self, lr: float) -> Optimizer:
        """A fresh Adam (zero moments) over this engine's weights, base learning rate lr."""
