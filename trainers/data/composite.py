"""The anchor-function composite task, and a probe: does a model compose anchors or memorize pairs?

After Zhang et al., "Initialization is Critical to Whether Transformers Fit Composite Functions
by Reasoning or Memorizing" (NeurIPS 2024). Four anchors are functions of a key: anchor 1 adds
5, anchor 2 adds 1, anchor 3 subtracts 2, anchor 4 subtracts 8. An ordered anchor pair (a, b)
maps a key x (20 .. 100) to f_b(f_a(x)) = x + s_a + s_b. Numbers n are content tokens
``16 + n`` (``trainers.data.vocab``); anchors are the reserved ids 7, 8, 9, 10.

Training data holds 15 of the 16 ordered pairs: (4, 3) carries the NON-compositional label
x - 6 (composition would give x - 10), and its mirror (3, 4) never occurs. On (3, 4) a model that
composes the anchors answers x - 10; one that memorized pairs as unordered answers x - 6.

A segment is ``[P] n_1 .. n_k x a b y``: the marker ``[P]`` (id 5), ``k = noise_tokens``
noise numbers drawn uniformly from the key range (so the key is found by its position, just
before the anchors), the key, the two anchors and the label. Keys and pairs are uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainers.data import vocab
from trainers.data.vocab import Role

ANCHOR_SHIFTS: dict[int, int] = {1: 5, 2: 1, 3: -2, 4: -8}  # anchor → the shift it applies
ANCHOR_TOKENS: dict[int, int] = dict(zip((1, 2, 3, 4), vocab.ANCHORS, strict=True))
KEY_MIN, KEY_MAX = 20, 100  # keys x are the numbers KEY_MIN .. KEY_MAX inclusive
NON_COMPOSITIONAL_PAIR = (4, 3)
NON_COMPOSITIONAL_SHIFT = -6  # its label is x - 6, the composition would be x - 10
HELD_OUT_PAIR = (3, 4)  # the mirror of NON_COMPOSITIONAL_PAIR: never in training data
SEEN_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a in (1, 2, 3, 4) for b in (1, 2, 3, 4) if (a, b) != HELD_OUT_PAIR
)


def segment_length(noise_tokens: int) -> int:
    """Tokens in one segment ``[P] noise.. x a b y``."""
    return 5 + noise_tokens


def number_token(n: int | np.ndarray) -> int | np.ndarray:
    """Token id of the number ``n`` (an int or an integer array)."""
    return n + vocab.CONTENT


def compositional_shift(pair: tuple[int, int]) -> int:
    """s_a + s_b: what composing the anchors of ``pair`` adds to the key."""
    return ANCHOR_SHIFTS[pair[0]] + ANCHOR_SHIFTS[pair[1]]


def trained_shift(pair: tuple[int, int]) -> int:
    """What the training label of ``pair`` adds to the key (refuses the held-out pair)."""
    if pair == HELD_OUT_PAIR:
        raise ValueError(f"pair {pair} is held out of training: it has no training label")
    if pair == NON_COMPOSITIONAL_PAIR:
        return NON_COMPOSITIONAL_SHIFT
    return compositional_shift(pair)


def mirrored_shift(pair: tuple[int, int]) -> int:
    """What the training data says about the unordered pair {a, b}: the shift of (a, b) if it is
    trained, else that of (b, a). A model that memorizes pairs symmetrically answers this."""
    return trained_shift(pair) if pair != HELD_OUT_PAIR else trained_shift(pair[::-1])


class Composite:
    """The segment family ``[P] noise.. x a b y`` over the seen pairs."""

    name = "composite"

    def __init__(self, noise_tokens: int) -> None:
        self.noise = noise_tokens
        self.length = segment_length(noise_tokens)
        roles = [Role.MARKER] + [Role.COMP_NOISE] * noise_tokens
        roles += [Role.COMP_KEY, Role.COMP_ANCHOR, Role.COMP_ANCHOR, Role.COMP_ANSWER]
        self.roles = np.array(roles, dtype=np.int8)
        n_keys = KEY_MAX - KEY_MIN + 1
        self.entropy = float((noise_tokens + 1) * np.log(n_keys) + np.log(len(SEEN_PAIRS)))
        pairs = np.array(SEEN_PAIRS)
        self._first = np.array([ANCHOR_TOKENS[a] for a in pairs[:, 0]])
        self._second = np.array([ANCHOR_TOKENS[b] for b in pairs[:, 1]])
        self._shift = np.array([trained_shift(tuple(p)) for p in SEEN_PAIRS])

    def generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        noise = rng.integers(KEY_MIN, KEY_MAX + 1, size=(n, self.noise))
        key = rng.integers(KEY_MIN, KEY_MAX + 1, size=n)
        pair = rng.integers(0, len(SEEN_PAIRS), size=n)
        out = np.empty((n, self.length), dtype=np.int64)
        out[:, 0] = vocab.COMPOSITE
        out[:, 1 : 1 + self.noise] = number_token(noise)
        out[:, -4] = number_token(key)
        out[:, -3] = self._first[pair]
        out[:, -2] = self._second[pair]
        out[:, -1] = number_token(key + self._shift[pair])
        return out


@dataclass(frozen=True)
class Probe:
    """Prompts that end just before the label of ``pair``, with the answers that tell
    composition from memorization. Read the model's prediction at the last prompt position."""

    pair: tuple[int, int]
    tokens: np.ndarray  # (n, prompt_len) int64 prompts
    keys: np.ndarray  # (n,) the key numbers x
    compositional: np.ndarray  # (n,) token id of x + s_a + s_b
    mirrored: np.ndarray  # (n,) token id of x + mirrored_shift(pair)


def build_probe(
    pair: tuple[int, int] = HELD_OUT_PAIR,
    keys: np.ndarray | None = None,
    noise_tokens: int = 2,
    context_items: int = 0,
    seed: int = 0,
) -> Probe:
    """Probe prompts ``[context segments] [P] noise.. x a b`` for every key (default: all keys).

    ``noise_tokens`` should match ``data.composite.noise_tokens`` of the run being probed;
    ``context_items`` full training segments (seen pairs) precede each prompt, as in the stream.
    Noise and context are drawn from ``seed``.
    """
    if pair not in SEEN_PAIRS and pair != HELD_OUT_PAIR:
        raise ValueError(f"pair must be two anchors in 1..4, got {pair}")
    keys = np.arange(KEY_MIN, KEY_MAX + 1) if keys is None else np.asarray(keys, dtype=np.int64)
    rng = np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, len(keys)])
    family = Composite(noise_tokens)
    item = family.generate(rng, len(keys))  # (n, length); overwrite the key and anchors
    item[:, -4] = number_token(keys)
    item[:, -3] = ANCHOR_TOKENS[pair[0]]
    item[:, -2] = ANCHOR_TOKENS[pair[1]]
    context = family.generate(rng, len(keys) * context_items).reshape(len(keys), -1)
    tokens = np.concatenate([context, item[:, :-1]], axis=1)
    return Probe(
        pair=pair,
        tokens=tokens,
        keys=keys,
        compositional=np.asarray(number_token(keys + compositional_shift(pair))),
        mirrored=np.asarray(number_token(keys + mirrored_shift(pair))),
    )
