"""The built-in corpus: a stream of short segments from four families (and optionally a fifth).

Content symbols ``0 .. V-1`` (``V = vocab_size - 16``) are token ids ``16 + i``
(``trainers.data.vocab``). Every segment opens with its family's marker token.

- **facts** ``[F] k1 k2 v  k1 k2 v ...`` (``facts_per_segment`` triples). A fixed table maps
  ``n_facts`` distinct symbol pairs ``(k1, k2)`` to a value ``v`` (uniform symbols). Each triple
  is fact ``i`` with probability ∝ ``i^-zipf_exponent`` (rank order is random with respect to
  the symbols). Values are learnable only by memorizing; rare facts need both capacity and
  enough tokens to have been seen, which gives power-law learning curves in N and in D.
- **rules** ``[R] r x0 x1 ... x_{L-1}``: rule ``r`` (uniform over ``n_rules``) has a fixed
  modulus ``m_r``, one of ``C, C/2, C/4, C/8`` (``C = rule_modulus``), and a fixed step ``s_r``
  in ``1 .. m_r - 1``; its terms are ``o_m + (x0 + t s_r) mod m_r`` with ``x0`` uniform and
  ``o_m`` the start of modulus m's own symbol range (``C`` at 0, ``C/2`` at ``C``, ...). ``x1``
  needs the memorized step of ``r``; later terms follow in context from the two before.
- **copy** ``[C] s1 .. sm [S] s1 .. sm``: a uniform random span and its repeat (induction).
- **markov** ``[T] t0 t1 ...``: ``t0`` uniform; each next symbol is one of ``markov_branching``
  fixed successors of the previous one, with probabilities ∝ ``1/rank`` (a sparse bigram chain).
- **composite** (``trainers.data.composite``), mixed in at ``composite_fraction`` of segments.

The fixed tables (facts, rule steps, successors) are drawn from ``world_seed`` alone, so every
run of a grid trains on the same "language"; the run seed only picks the stream.
"""

from __future__ import annotations

import numpy as np

from trainers.data import vocab
from trainers.data.config import SyntheticConfig
from trainers.data.stream import WORLD_TAG, seed_word
from trainers.data.vocab import Role


def zipf_probabilities(n: int, exponent: float) -> np.ndarray:
    """(n,) probabilities ∝ rank^-exponent for ranks 1..n."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


class InverseCdf:
    """Maps uniform draws u in [0, 1) to indices i with probability ``probabilities[i]``.

    The smallest i with ``cdf[i] > u``, found through a guide table (a bisection over a large cdf
    costs ~17 cache misses per draw; the guide table lands within a step or two of the answer).
    """

    def __init__(self, probabilities: np.ndarray) -> None:
        self._cdf = np.cumsum(probabilities)
        self._cdf[-1] = np.inf  # u < 1 always lands inside
        # 16 buckets per entry; past 2^18 entries the table would outgrow the caches it saves.
        log_n = int(np.ceil(np.log2(len(probabilities))))
        self._buckets = 1 << max(10, log_n + 4) if log_n <= 18 else 0
        grid = np.arange(self._buckets) / max(self._buckets, 1)
        self._guide = np.searchsorted(self._cdf, grid, side="right").astype(np.int32)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        if not self._buckets:
            return np.searchsorted(self._cdf, u, side="right")
        index = self._guide[(u * self._buckets).astype(np.int64)].astype(np.int64)
        while True:  # walk forward past cdf values <= u: at most a few passes, usually none
            behind = self._cdf[index] <= u
            if not behind.any():
                return index
            index += behind


class Facts:
    """``[F] (k1 k2 v) x per_segment``: Zipf-sampled lookups in a fixed key → value table."""

    name = "facts"

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        n_content = vocab.n_content(config.vocab_size)
        pairs = rng.choice(n_content * n_content, size=config.n_facts, replace=False)
        self.key1 = pairs // n_content + vocab.CONTENT  # (n_facts,) token ids
        self.key2 = pairs % n_content + vocab.CONTENT
        self.value = rng.integers(0, n_content, size=config.n_facts) + vocab.CONTENT
        self.probabilities = zipf_probabilities(config.n_facts, config.zipf_exponent)
        self._sampler = InverseCdf(self.probabilities)
        self.per_segment = config.facts_per_segment
        self.length = 1 + 3 * self.per_segment
        roles = [Role.MARKER] + [Role.FACT_KEY, Role.FACT_KEY, Role.FACT_VALUE] * self.per_segment
        self.roles = np.array(roles, dtype=np.int8)
        p = self.probabilities
        self.entropy = float(-(p * np.log(p)).sum()) * self.per_segment

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Fact indices (0-based ranks) drawn with the Zipf probabilities."""
        return self._sampler(rng.random(shape))

    def generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        fact = self.sample(rng, (n, self.per_segment))
        out = np.empty((n, self.length), dtype=np.int64)
        out[:, 0] = vocab.FACT
        out[:, 1::3] = self.key1[fact]
        out[:, 2::3] = self.key2[fact]
        out[:, 3::3] = self.value[fact]
        return out


class Rules:
    """``[R] r x0 .. x_{L-1}``: an arithmetic progression with the step and modulus of rule r.

    Moduli are graded (C, C/2, C/4, C/8, those >= 2; each rule gets one uniformly), each on its
    own range of symbols, so in-context inference is learned modulus by modulus, small ones first.
    """

    name = "rules"

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        moduli = np.array([m for m in (config.rule_modulus >> j for j in range(4)) if m >= 2])
        offsets = np.concatenate([[0], np.cumsum(moduli)[:-1]])  # disjoint symbol ranges
        level = rng.integers(0, len(moduli), size=config.n_rules)
        self.modulus = moduli[level]  # (n_rules,)
        self.offset = offsets[level]
        self.step = 1 + (rng.random(config.n_rules) * (self.modulus - 1)).astype(np.int64)
        self.n_rules = config.n_rules
        self.terms = config.rule_length
        self.length = 2 + self.terms
        roles = [Role.MARKER, Role.RULE_ID, Role.RULE_START, Role.RULE_FIRST]
        roles += [Role.RULE_NEXT] * (self.terms - 2)
        self.roles = np.array(roles, dtype=np.int8)
        self.entropy = float(np.log(self.n_rules) + np.log(self.modulus).mean())

    def generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        rule = rng.integers(0, self.n_rules, size=n)
        modulus, step = self.modulus[rule][:, None], self.step[rule][:, None]
        start = (rng.random((n, 1)) * modulus).astype(np.int64)
        terms = (start + step * np.arange(self.terms)) % modulus + self.offset[rule][:, None]
        out = np.empty((n, self.length), dtype=np.int64)
        out[:, 0] = vocab.RULE
        out[:, 1] = rule + vocab.CONTENT
        out[:, 2:] = terms + vocab.CONTENT
        return out


class Copy:
    """``[C] s1 .. sm [S] s1 .. sm``: a uniform random span, then the same span again."""

    name = "copy"

    def __init__(self, config: SyntheticConfig) -> None:
        self.n_content = vocab.n_content(config.vocab_size)
        self.span = config.copy_length
        self.length = 2 + 2 * self.span
        roles = [Role.MARKER] + [Role.COPY_SPAN] * self.span
        roles += [Role.MARKER] + [Role.COPY_REPEAT] * self.span
        self.roles = np.array(roles, dtype=np.int8)
        self.entropy = self.span * float(np.log(self.n_content))

    def generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        span = rng.integers(0, self.n_content, size=(n, self.span)) + vocab.CONTENT
        out = np.empty((n, self.length), dtype=np.int64)
        out[:, 0] = vocab.COPY
        out[:, 1 : 1 + self.span] = span
        out[:, 1 + self.span] = vocab.SEP
        out[:, 2 + self.span :] = span
        return out


class Markov:
    """``[T] t0 t1 ...``: a sparse random bigram chain over the content symbols."""

    name = "markov"

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        self.n_content = vocab.n_content(config.vocab_size)
        self.successors = _distinct_choices(rng, self.n_content, config.markov_branching)
        ranks = np.arange(1, config.markov_branching + 1, dtype=np.float64)
        self.transition = (1.0 / ranks) / (1.0 / ranks).sum()  # (k,), the same for every symbol
        self._cdf = np.cumsum(self.transition)
        self._cdf[-1] = 1.0
        self.steps = config.markov_length
        self.length = 1 + self.steps
        roles = [Role.MARKER, Role.TEXT_START] + [Role.TEXT] * (self.steps - 1)
        self.roles = np.array(roles, dtype=np.int8)
        transition_entropy = float(-(self.transition * np.log(self.transition)).sum())
        self.entropy = float(np.log(self.n_content)) + (self.steps - 1) * transition_entropy

    def generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = self.successors.shape[1]
        choice = np.searchsorted(self._cdf, rng.random((self.steps - 1, n)), side="right")
        flat = self.successors.reshape(-1)
        text = np.empty((self.steps, n), dtype=np.int64)  # time-major: each step is contiguous
        text[0] = rng.integers(0, self.n_content, size=n)
        for t in range(1, self.steps):  # sequential in t, vectorized over segments
            np.take(flat, text[t - 1] * k + choice[t - 1], out=text[t])
        out = np.empty((n, self.length), dtype=np.int64)
        out[:, 0] = vocab.TEXT
        out[:, 1:] = text.T + vocab.CONTENT
        return out


def _distinct_choices(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n, k): for each of n rows, k distinct symbols of 0..n-1 in random order."""
    rows = []
    for lo in range(0, n, 1024):  # chunks bound the (rows, n) scratch array
        keys = rng.random((min(1024, n - lo), n))
        chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(keys, chosen, axis=1), axis=1)
        rows.append(np.take_along_axis(chosen, order, axis=1))
    return np.concatenate(rows)


def build_families(config: SyntheticConfig) -> tuple[list, list[float]]:
    """The four families of ``config``'s world and their relative segment weights."""
    rng = np.random.default_rng([WORLD_TAG, seed_word(config.world_seed), 0])
    families = [Facts(config, rng), Rules(config, rng), Copy(config), Markov(config, rng)]
    weights = [config.facts_weight, config.rules_weight, config.copy_weight, config.markov_weight]
    return families, weights
