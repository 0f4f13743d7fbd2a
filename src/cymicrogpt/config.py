"""microgpt's hyperparameters, all in one place: the model's shape (``GPTConfig``, which
counts its weights from the numbers and refuses more than the engine can index) and the
constants of its initialisation, normalisation, optimizer, training run and sampling.

Every other module imports them from here; none types them again.  The values are
microgpt.py's: changing one changes what "reproduces microgpt exactly" means.
"""
from __future__ import annotations

from dataclasses import dataclass

from .checks import check_count

# --- the model -------------------------------------------------------------------------------
RMSNORM_EPS = 1e-5  # rmsnorm: x * (mean(x**2) + RMSNORM_EPS) ** -0.5 (no learned gain)
MLP_EXPANSION = 4  # the MLP's hidden width, in units of n_embd
# Each transformer block's weight matrices in state-dict (and RNG) order, with their shape
# in units of n_embd: (name, rows = output features, cols = input features).
LAYER_MATRICES = (
    ("attn_wq", 1, 1),
    ("attn_wk", 1, 1),
    ("attn_wv", 1, 1),
    ("attn_wo", 1, 1),
    ("mlp_fc1", MLP_EXPANSION, 1),
    ("mlp_fc2", 1, MLP_EXPANSION),
)
LAYER_MATRIX_NAMES = tuple(name for name, _, _ in LAYER_MATRICES)
PARAMS_MAX = 2**31 - 1  # the compiled engine indexes its graph nodes (weights first) with int32
MIN_VOCAB_SIZE = 2  # BOS and one character: the smallest vocabulary any data gives

# --- initialisation and training ---------------------------------------------------------------
INIT_STD = 0.08  # every weight starts as random.gauss(0, INIT_STD)
DEFAULT_SEED = 42  # random.seed(42): the shuffle, the initial weights, then sampling
DEFAULT_STEPS = 1000  # training steps (one document each); the lr decay depends on it
DEFAULT_LR = 0.01  # Adam's base learning rate, decayed linearly to 0 over the run
ADAM_BETA1 = 0.85  # decay of the first moment (mean of gradients)
ADAM_BETA2 = 0.99  # decay of the second moment (mean of squared gradients)
ADAM_EPS = 1e-8  # added to sqrt(v_hat) before dividing

# --- sampling ------------------------------------------------------------------------------------
DEFAULT_TEMPERATURE = 0.5  # logits are divided by it before the softmax
DEFAULT_NUM_SAMPLES = 20  # names microgpt prints after training


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 1  # depth: number of transformer blocks
    n_embd: int = 16  # width: embedding dimension of the residual stream
    block_size: int = 16  # longest context the model attends over (positions 0..block_size-1)
    n_head: int = 4  # attention heads; each sees n_embd // n_head dimensions

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "block_size", "n_head"):
            # GPTConfig(n_layer=True) is a bug, not a 1-layer model.
            check_count(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        # The vocabulary comes with the data, but a shape too large for any vocabulary is
        # refused here already, from its numbers: before any data is read or weight drawn.
        check_model_size(self, MIN_VOCAB_SIZE)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self, vocab_size: int) -> int:
        """The model's weight count, from the shapes alone: O(1) whatever the sizes, and
        equal to ``num_params(state_dict_layout(self, vocab_size))``, which builds the layout."""
        e = self.n_embd
        per_layer = sum(rows * cols for _, rows, cols in LAYER_MATRICES) * e * e  # 12 e**2
        embeddings = 2 * vocab_size * e + self.block_size * e  # wte and lm_head, wpe
        return embeddings + self.n_layer * per_layer


def check_model_size(config: GPTConfig, vocab_size: int) -> None:
    """ValueError if the model has more weights than the compiled engine can index;
    computed from the numbers (``GPTConfig.num_params``), so instant for any size."""
    size = config.num_params(vocab_size)
    if size > PARAMS_MAX:
        smallest = " even with the smallest vocabulary (BOS and one character)" if vocab_size == MIN_VOCAB_SIZE else ""
        raise ValueError(f"the model would have {size} weights{smallest}; at most {PARAMS_MAX} fit the compiled engine")
