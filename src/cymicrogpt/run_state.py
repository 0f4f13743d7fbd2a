"""``RunState``: everything a training run is, as plain values.

The record between training.py (``Run.state()``, ``Run.from_state()``) and checkpoint.py
(which writes and reads it); it imports neither, nor NumPy.  Building one checks its
random-generator state (``check_rng_state``), so that a state built by hand and one read
from a file are checked by the same code, once.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .config import GPTConfig

MT_WORDS = 624  # the Mersenne Twister's state words
RNG_STATE_LEN = MT_WORDS + 1  # random.Random.getstate()[1]: the words, then the position in them
MT_UPPER_BIT = 0x80000000  # the one bit of word 0 that the next twist of the words uses


@dataclass
class RunState:
    """Everything a training run is, as plain values (what a checkpoint stores)."""

    config: GPTConfig
    chars: str  # the tokenizer's characters, in token-id order
    docs: list[str]  # in training order (already shuffled)
    weights: list[float]  # flat, state-dict order
    adam_m: list[float]  # Adam's first moments, same order
    adam_v: list[float]  # Adam's second moments
    step: int  # steps completed
    num_steps: int  # the run's length (the learning-rate decay depends on it)
    lr: float
    seed: int
    backend: str  # the engine it was trained on
    losses: list[float]  # one per completed step
    rng_state: tuple  # random.Random.getstate() of the run's one random stream

    def __post_init__(self) -> None:
        self.rng_state = check_rng_state(self.rng_state)


def check_rng_state(rng_state) -> tuple:
    """`rng_state` if it is a state ``random.Random.getstate()`` can return: (VERSION, a tuple
    of 624 words in 0..2**32-1, not all zero, and a position in 1..624, ``gauss_next``: None
    or a finite float); ValueError saying what is wrong otherwise.

    ``random.Random.setstate()`` alone checks less: it takes version 2 states, keeps only
    the low 32 bits of a larger word, takes position 0 and a zero state (which then yields
    only zeros), and any object as ``gauss_next`` (which ``gauss()`` would then return).
    """
    try:
        version, words, gauss_next = rng_state
    except (TypeError, ValueError):
        raise _bad("it must be (version, words, gauss_next), as random.Random.getstate() returns") from None
    if not _is_int(version) or version != random.Random.VERSION:
        raise _bad(f"unsupported version {_show(version)} (expected {random.Random.VERSION})")
    if not isinstance(words, tuple) or len(words) != RNG_STATE_LEN:
        raise _bad(f"its words must be a tuple of {RNG_STATE_LEN} integers")
    for i, word in enumerate(words[:MT_WORDS]):
        if not (_is_int(word) and 0 <= word < 2**32):
            raise _bad(f"word {i} is {_show(word)}, not an integer in 0..2**32-1")
    # The generator's state is the upper bit of word 0 and words 1..623: the next twist reads
    # nothing else.  Zero, it stays zero, and every draw is 0.  Seeding sets that bit and a
    # twist never turns a non-zero state into zero, so getstate() never returns one.
    if not (words[0] & MT_UPPER_BIT or any(words[1:MT_WORDS])):
        raise _bad("its words are all zero (but for the low 31 bits of word 0, never used again): "
                   "such a generator yields only zeros")
    # The position counts the words of the current batch already used: seeding leaves it at
    # 624, so the next draw twists a new batch and leaves 1; each draw adds 1.  Never 0.
    if not (_is_int(words[MT_WORDS]) and 1 <= words[MT_WORDS] <= MT_WORDS):
        raise _bad(f"its position (word {MT_WORDS}) is {_show(words[MT_WORDS])}, not an integer in 1..{MT_WORDS}")
    # gauss() keeps the second of each pair of normal deviates it makes: always finite.
    if gauss_next is not None and not (isinstance(gauss_next, float) and math.isfinite(gauss_next)):
        raise _bad(f"gauss_next is {_show(gauss_next)}, not None or a finite float")
    return version, words, None if gauss_next is None else float(gauss_next)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value) -> str:
    # repr() of an int above sys.get_int_max_str_digits() raises; such a number is only "huge" here
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    return repr(value)[:60]


def _bad(problem: str) -> ValueError:
    return ValueError(f"bad random-generator state (rng_state): {problem}")
