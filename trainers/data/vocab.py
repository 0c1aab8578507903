"""The token layout of the built-in corpora (``synthetic``, ``composite``), and token roles.

Ids below ``CONTENT`` are reserved special tokens; content token ``i`` (a number, an entity, a
symbol of the background text) is id ``CONTENT + i``, for ``0 <= i < vocab_size - CONTENT``.

A *role* says which family and which part of a segment a token position came from, so that a
token-level analysis can split the loss into tokens that short context predicts, tokens that only
the wider context constrains, tokens that must be memorized, and tokens that nothing predicts.
"""

from __future__ import annotations

import enum

# Reserved ids. 0 is never emitted (free for padding by downstream code).
PAD = 0
FACT = 1  # segment marker: memorized key → value facts
RULE = 2  # segment marker: arithmetic progressions
COPY = 3  # segment marker: a random span and its repeat
TEXT = 4  # segment marker: background Markov text
COMPOSITE = 5  # segment marker "[P]": the anchor-function composite task
SEP = 6  # separates a copy span from its repeat
ANCHORS = (7, 8, 9, 10)  # the composite task's anchors 1, 2, 3, 4
CONTENT = 16  # first content id; ids 11..15 are reserved and never emitted

MARKERS = {"facts": FACT, "rules": RULE, "copy": COPY, "markov": TEXT, "composite": COMPOSITE}


def n_content(vocab_size: int) -> int:
    """How many content symbols a vocabulary of ``vocab_size`` ids holds."""
    return vocab_size - CONTENT


class Role(enum.IntEnum):
    """Where a token position came from (stored as int8 beside the tokens)."""

    MARKER = 0  # a segment marker or the copy separator
    TEXT = 1  # background Markov text: the previous token predicts it (bigram)
    FACT_KEY = 2  # a fact's key token: Zipf-distributed, predictable only as far as frequencies go
    FACT_VALUE = 3  # a fact's value: a pure function of the key, learnable only by memorizing
    RULE_ID = 4  # which progression rule follows: uniform, unpredictable
    RULE_START = 5  # x0 of a progression: uniform, unpredictable
    RULE_FIRST = 6  # x1 = x0 + step(rule): needs the memorized step of the rule id
    RULE_NEXT = 7  # x2, x3, ...: inferable in context from the two previous terms
    COPY_SPAN = 8  # a random span token: unpredictable
    COPY_REPEAT = 9  # the repeat of the span: predictable by induction (copying from context)
    COMP_NOISE = 10  # composite task: a noise token, unpredictable
    COMP_KEY = 11  # composite task: the key x, unpredictable
    COMP_ANCHOR = 12  # composite task: an anchor, unpredictable
    COMP_ANSWER = 13  # composite task: the label y, a function of (x, a, b) in context
    TEXT_START = 14  # the first background Markov token of a segment: uniform, unpredictable


# Coarse kinds for token-level analysis: what it takes to predict a token of each role.
ROLE_KIND: dict[Role, str] = {
    Role.MARKER: "structure",
    Role.TEXT: "bigram",
    Role.FACT_KEY: "frequency",
    Role.FACT_VALUE: "memorized",
    Role.RULE_ID: "random",
    Role.RULE_START: "random",
    Role.RULE_FIRST: "memorized",
    Role.RULE_NEXT: "context",
    Role.COPY_SPAN: "random",
    Role.COPY_REPEAT: "context",
    Role.COMP_NOISE: "random",
    Role.COMP_KEY: "random",
    Role.COMP_ANCHOR: "random",
    Role.COMP_ANSWER: "context",
    Role.TEXT_START: "random",
}
