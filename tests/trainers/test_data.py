"""Token sources: determinism, splits, generative families, the composite task, files, configs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from trainers.data import (
    DataConfig,
    GeneratedSource,
    Role,
    SyntheticConfig,
    build_source,
    composite,
    vocab,
    write_memmap,
)
from trainers.data.stream import BLOCK_TOKENS
from trainers.data.synthetic import InverseCdf, build_families, zipf_probabilities
from trainers.errors import ConfigError
from trainers.schema import build

SEQ_LEN = 64
GENERATED = ["synthetic", "composite"]


def source(seed: int = 0, seq_len: int = SEQ_LEN, **data) -> GeneratedSource:
    built = build_source(build(DataConfig, data, "data"), seq_len, seed)
    assert isinstance(built, GeneratedSource)
    return built


def segments(rows: np.ndarray, marker: int, length: int) -> np.ndarray:
    """Every whole segment opening with ``marker`` in ``rows``: (n, length)."""
    r, c = np.nonzero(rows[:, : rows.shape[1] - length + 1] == marker)
    return rows[r[:, None], c[:, None] + np.arange(length)]


def markers(rows: np.ndarray) -> Counter:
    """How many segments of each family open in ``rows``."""
    ids = rows[(rows >= vocab.FACT) & (rows <= vocab.COMPOSITE)]
    return Counter({name: int((ids == m).sum()) for name, m in vocab.MARKERS.items()})


# --- the contract: determinism, shapes, order independence, data parallelism --------------------


@pytest.mark.parametrize("kind", GENERATED)
def test_same_seed_same_batches_and_other_seed_other_batches(kind: str) -> None:
    a, b, c = source(0, source=kind), source(0, source=kind), source(1, source=kind)
    for step in (0, 7, 3000):
        assert np.array_equal(a.train_batch(step, 8), b.train_batch(step, 8))
        assert not np.array_equal(a.train_batch(step, 8), c.train_batch(step, 8))


@pytest.mark.parametrize("kind", GENERATED)
def test_shapes_dtypes_and_vocab_range(kind: str) -> None:
    src = source(source=kind, eval_sequences=5)
    assert src.seq_len == SEQ_LEN and src.vocab_size == 512
    for batch in (src.train_batch(2, 3), src.eval_batch()):
        assert batch.dtype == np.int64 and batch.shape[1] == SEQ_LEN + 1
        assert batch.min() >= 1 and batch.max() < src.vocab_size  # 0 (padding) is never emitted
    assert src.train_batch(2, 3).shape[0] == 3 and src.eval_batch().shape[0] == 5


def test_train_batch_does_not_depend_on_call_order_or_cache() -> None:
    rows_per_block, size = BLOCK_TOKENS // (SEQ_LEN + 1), 50
    far = 5 * rows_per_block // size  # this batch straddles blocks 4 and 5
    assert (far * size) // rows_per_block != (far * size + size - 1) // rows_per_block
    forward, backward = source(), source()
    steps = [0, 1, far, far + 1, 3, 10_000]
    first = {s: forward.train_batch(s, size) for s in steps}
    for s in reversed(steps):
        assert np.array_equal(backward.train_batch(s, size), first[s])
    assert np.array_equal(forward.train_batch(0, size), first[0])  # asked again after eviction
    straddling = forward.train_batch(far, size)
    assert len({row.tobytes() for row in straddling}) == size


def test_batch_size_only_cuts_the_same_stream() -> None:
    src = source()
    assert np.array_equal(
        src.train_batch(1, 64), np.concatenate([src.train_batch(2, 32), src.train_batch(3, 32)])
    )


def test_data_parallel_ranks_partition_the_global_batch() -> None:
    world = 4
    ranks = [source() for _ in range(world)]
    for step in (0, 5, 1234):
        whole = source().train_batch(step, 32)
        parts = [ranks[r].train_batch(step, 32)[r::world] for r in range(world)]
        assert all(p.shape == (8, SEQ_LEN + 1) for p in parts)
        rebuilt = np.empty_like(whole)
        for r, part in enumerate(parts):
            rebuilt[r::world] = part
        assert np.array_equal(rebuilt, whole)
        assert len({row.tobytes() for row in whole}) == 32  # no row is served twice


# --- splits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", GENERATED)
def test_eval_rows_never_occur_among_the_first_train_rows(kind: str) -> None:
    src = source(source=kind)
    evaluation = {row.tobytes() for row in src.eval_batch()}
    assert len(evaluation) == 128
    train = src.train_batch(0, 20_000)  # 1.3M tokens
    assert not evaluation & {row.tobytes() for row in train}


def test_eval_set_is_fixed_and_shared_by_every_run_seed() -> None:
    a, b = source(0), source(99)
    first = a.eval_batch()
    first[:] = 0  # callers get a copy
    assert np.array_equal(a.eval_batch(), b.eval_batch())
    assert not np.array_equal(a.train_batch(0, 4), b.train_batch(0, 4))


# --- the synthetic families --------------------------------------------------------------------


def test_fact_values_are_a_function_of_the_key_with_zipf_frequencies() -> None:
    config = SyntheticConfig()
    rows = source(eval_sequences=1).train_batch(0, 4000)
    facts = segments(rows, vocab.FACT, 1 + 3 * config.facts_per_segment)[:, 1:].reshape(-1, 3)
    assert len(facts) > 20_000
    table: dict[tuple[int, int], set[int]] = {}
    for k1, k2, v in facts:
        table.setdefault((int(k1), int(k2)), set()).add(int(v))
    assert all(len(values) == 1 for values in table.values())
    # The most frequent fact is the table's rank-1 fact, at its Zipf probability.
    family = build_families(config)[0][0]
    top = (int(family.key1[0]), int(family.key2[0]))
    observed = Counter(map(tuple, facts[:, :2].tolist()))
    assert observed.most_common(1)[0][0] == top
    assert observed[top] / len(facts) == pytest.approx(family.probabilities[0], rel=0.1)


@pytest.mark.parametrize(
    "probabilities",
    [zipf_probabilities(5000, 1.1), np.array([0.0, 0.3, 0.0, 0.7, 0.0]), np.ones(1)],
)
def test_inverse_cdf_sampler_matches_bisection(probabilities: np.ndarray) -> None:
    u = np.random.default_rng(0).random(200_000)
    expected = np.minimum(np.searchsorted(np.cumsum(probabilities), u, side="right"), len(probabilities) - 1)
    drawn = InverseCdf(probabilities)(u)
    assert np.array_equal(drawn, expected)
    assert probabilities[drawn].min() > 0  # never an index of probability 0


def test_rules_are_progressions_with_one_step_and_modulus_per_rule() -> None:
    config = SyntheticConfig()
    rules = build_families(config)[0][1]
    segs = segments(source().train_batch(0, 2000), vocab.RULE, 2 + config.rule_length)
    assert len(segs) > 500
    rule = segs[:, 1] - vocab.CONTENT
    terms = segs[:, 2:] - vocab.CONTENT - rules.offset[rule][:, None]
    modulus = rules.modulus[rule][:, None]
    assert ((terms >= 0) & (terms < modulus)).all()  # each rule stays in its modulus's range
    steps = np.diff(terms, axis=1) % modulus
    assert (steps == rules.step[rule][:, None]).all() and (steps > 0).all()
    assert set(np.unique(rules.modulus)) == {64, 32, 16, 8}
    ranges = {m: set(rules.offset[rules.modulus == m]) for m in (64, 32, 16, 8)}
    assert ranges == {64: {0}, 32: {64}, 16: {96}, 8: {112}}


def test_copy_segments_repeat_their_span() -> None:
    span = SyntheticConfig().copy_length
    segs = segments(source().train_batch(0, 1000), vocab.COPY, 2 + 2 * span)
    assert len(segs) > 100
    assert (segs[:, 1 + span] == vocab.SEP).all()
    assert np.array_equal(segs[:, 1 : 1 + span], segs[:, 2 + span :])


def test_markov_text_follows_a_sparse_chain() -> None:
    config = SyntheticConfig()
    segs = segments(source().train_batch(0, 2000), vocab.TEXT, 1 + config.markov_length)
    successors: dict[int, set[int]] = {}
    for seg in segs:
        for a, b in zip(seg[1:-1], seg[2:], strict=True):
            successors.setdefault(int(a), set()).add(int(b))
    assert max(len(s) for s in successors.values()) == config.markov_branching
    assert len(successors) > 400  # the chain visits most symbols


def test_entropy_floor_of_simple_streams() -> None:
    only_composite = source(source="composite", composite={"noise_tokens": 0})
    assert only_composite.entropy_per_token == pytest.approx((np.log(81) + np.log(15)) / 5)
    weights = {"facts_weight": 0, "rules_weight": 0, "markov_weight": 0, "copy_length": 3}
    only_copy = source(synthetic=weights)
    assert only_copy.entropy_per_token == pytest.approx(3 * np.log(496) / 8)
    full = source(composite_fraction=0.2).entropy_per_token
    assert 1.0 < full < np.log(496)


def test_family_weights_select_families() -> None:
    counts = markers(source(synthetic={"facts_weight": 0.0, "copy_weight": 0.0}).train_batch(0, 500))
    assert counts["facts"] == counts["copy"] == counts["composite"] == 0
    assert counts["rules"] > 0 and counts["markov"] > 0


def test_roles_label_the_tokens_they_describe() -> None:
    config = SyntheticConfig()
    src = source(composite_fraction=0.2)
    tokens, roles = src.train_batch_with_roles(0, 500)
    assert np.array_equal(tokens, src.train_batch(0, 500))
    assert tokens.shape == roles.shape and roles.dtype == np.int8
    is_marker = np.isin(tokens, [*vocab.MARKERS.values(), vocab.SEP])
    assert np.array_equal(roles == Role.MARKER, is_marker)
    assert np.isin(tokens[roles == Role.COMP_ANCHOR], vocab.ANCHORS).all()
    # The value of each fact triple sits two positions after its first key.
    r, c = np.nonzero(roles[:, :-2] == Role.FACT_KEY)
    first_keys = roles[r, c + 1] == Role.FACT_KEY
    assert (roles[r[first_keys], c[first_keys] + 2] == Role.FACT_VALUE).all()
    # A copy repeat equals the token copy_length + 1 positions earlier.
    r, c = np.nonzero(roles == Role.COPY_REPEAT)
    back = c >= config.copy_length + 1
    assert np.array_equal(tokens[r[back], c[back]], tokens[r[back], c[back] - config.copy_length - 1])
    _, eval_roles = src.eval_batch_with_roles()
    assert eval_roles.shape == src.eval_batch().shape


# --- the composite task ------------------------------------------------------------------------


def composite_items(rows: np.ndarray, noise: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    segs = segments(rows, vocab.COMPOSITE, 5 + noise)
    anchor_of = {token: anchor for anchor, token in composite.ANCHOR_TOKENS.items()}
    x = segs[:, -4] - vocab.CONTENT
    a = np.array([anchor_of[t] for t in segs[:, -3]])
    b = np.array([anchor_of[t] for t in segs[:, -2]])
    return x, a, b, segs[:, -1] - vocab.CONTENT


@pytest.mark.parametrize("noise", [0, 2])
def test_composite_labels_follow_the_anchors_except_the_non_compositional_pair(noise: int) -> None:
    src = source(source="composite", composite={"noise_tokens": noise})
    x, a, b, y = composite_items(src.train_batch(0, 1000), noise)
    assert len(x) > 5000
    assert ((x >= composite.KEY_MIN) & (x <= composite.KEY_MAX)).all()
    shift = {anchor: s for anchor, s in composite.ANCHOR_SHIFTS.items()}
    expected = x + np.array([shift[i] for i in a]) + np.array([shift[j] for j in b])
    odd = (a == 4) & (b == 3)
    assert odd.any()
    assert np.array_equal(y[odd], x[odd] - 6)  # (4, 3) is taught x - 6, not x - 10
    assert np.array_equal(y[~odd], expected[~odd])
    seen = set(zip(a.tolist(), b.tolist(), strict=True))
    assert seen == set(composite.SEEN_PAIRS) and len(seen) == 15


@pytest.mark.parametrize("data", [{"source": "composite"}, {"composite_fraction": 0.3}])
def test_held_out_pair_never_occurs_in_training_or_eval(data: dict) -> None:
    src = source(**data)
    first, second = composite.ANCHOR_TOKENS[3], composite.ANCHOR_TOKENS[4]
    for rows in (src.train_batch(0, 20_000), src.eval_batch()):
        assert not ((rows[:, :-1] == first) & (rows[:, 1:] == second)).any()
    rows = src.train_batch(0, 20_000)
    assert ((rows[:, :-1] == second) & (rows[:, 1:] == first)).any()  # while (4, 3) does


def test_probe_prompts_and_answers() -> None:
    probe = composite.build_probe(composite.HELD_OUT_PAIR, noise_tokens=2, context_items=3)
    keys = np.arange(composite.KEY_MIN, composite.KEY_MAX + 1)
    assert np.array_equal(probe.keys, keys)
    assert probe.tokens.shape == (len(keys), 3 * 7 + 6)
    assert np.array_equal(
        probe.tokens[:, -3:] - [vocab.CONTENT, 0, 0],
        np.stack(
            [
                keys,
                np.full_like(keys, composite.ANCHOR_TOKENS[3]),
                np.full_like(keys, composite.ANCHOR_TOKENS[4]),
            ],
            1,
        ),
    )
    assert np.array_equal(probe.compositional, keys - 10 + vocab.CONTENT)
    assert np.array_equal(probe.mirrored, keys - 6 + vocab.CONTENT)
    # Context segments are ordinary training items.
    x, a, b, y = composite_items(probe.tokens, 2)
    assert len(x) == 3 * len(keys) and not ((a == 3) & (b == 4)).any()
    assert np.array_equal(y, x + [composite.trained_shift(p) for p in zip(a, b, strict=True)])
    trained = composite.build_probe((4, 3), keys=[20, 50])
    assert list(trained.compositional - vocab.CONTENT) == [10, 40]
    assert list(trained.mirrored - vocab.CONTENT) == [14, 44]
    plain = composite.build_probe((1, 2), keys=[30])
    assert plain.compositional[0] == plain.mirrored[0] == 36 + vocab.CONTENT
    with pytest.raises(ValueError):
        composite.build_probe((0, 5))


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1.0])
def test_composite_fraction_is_the_share_of_segments(fraction: float) -> None:
    counts = markers(source(composite_fraction=fraction).train_batch(0, 3000))
    share = counts["composite"] / sum(counts.values())
    assert share == pytest.approx(fraction, abs=0.015)  # ~14k segments: 3.5 sigma at 0.5


# --- files -------------------------------------------------------------------------------------


def text_source(tmp_path, data: bytes, seed: int = 0, seq_len: int = 16, **keys):
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    config = build(DataConfig, {"source": "text", "path": str(path), **keys}, "data")
    return build_source(config, seq_len, seed)


def test_text_round_trip_and_split(tmp_path) -> None:
    data = np.random.default_rng(0).integers(0, 256, size=5000).astype(np.uint8).tobytes()
    src = text_source(tmp_path, data, eval_sequences=10, eval_fraction=0.2)
    assert src.vocab_size == 256 and src.seq_len == 16
    n_train = 4000
    train, held_out = data[:n_train], data[n_train:]
    batch = src.train_batch(3, 50)
    assert batch.shape == (50, 17) and batch.dtype == np.int64
    assert all(bytes(row.astype(np.uint8)) in train for row in batch)
    evaluation = src.eval_batch()
    assert evaluation.shape == (10, 17)
    assert all(bytes(row.astype(np.uint8)) in held_out for row in evaluation)
    assert bytes(evaluation[-1].astype(np.uint8)) == held_out[-17:]  # windows reach the file's end
    again = text_source(tmp_path, data, eval_sequences=10, eval_fraction=0.2)
    assert np.array_equal(again.train_batch(3, 50), batch)
    other = text_source(tmp_path, data, seed=1, eval_sequences=10, eval_fraction=0.2)
    assert not np.array_equal(other.train_batch(3, 50), batch)


@pytest.mark.parametrize("vocab_size, dtype", [(60_000, "uint16"), (70_000, "uint32")])
def test_memmap_round_trip_and_split(tmp_path, vocab_size: int, dtype: str) -> None:
    n = 50_000  # token i is i: every window shows where it starts
    path = write_memmap(tmp_path / "tokens.bin", np.arange(n), vocab_size)
    assert json.loads((tmp_path / "tokens.bin.json").read_text()) == {
        "dtype": dtype,
        "vocab_size": vocab_size,
    }
    assert path.stat().st_size == n * (2 if dtype == "uint16" else 4)
    config = build(DataConfig, {"source": "memmap", "path": str(path), "eval_sequences": 7}, "data")
    src = build_source(config, 32, seed=3)
    assert src.vocab_size == vocab_size
    n_train = n - n // 10
    batch = src.train_batch(0, 4096 + 100)  # spans two blocks of window starts
    assert (np.diff(batch, axis=1) == 1).all()
    assert batch[:, 0].min() >= 0 and batch[:, -1].max() < n_train
    assert len(np.unique(batch[:, 0])) > 3000  # starts spread over the training part
    evaluation = src.eval_batch()
    assert (np.diff(evaluation, axis=1) == 1).all()
    assert evaluation[0, 0] == n_train and evaluation[-1, -1] == n - 1
    assert np.array_equal(src.train_batch(40, 100), batch[4000:4100])


# --- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, key",
    [
        ({"composite_fraction": 2}, "data.composite_fraction: must be in [0, 1], got 2"),
        ({"composite_fraction": 0.5, "source": "composite"}, "data.composite_fraction: only"),
        ({"source": "text"}, "data.path: required"),
        ({"source": "memmap"}, "data.path: required"),
        ({"path": "x.bin"}, "data.path: only"),
        ({"eval_sequences": 0}, "data.eval_sequences: must be >= 1"),
        ({"eval_fraction": 1.0}, "data.eval_fraction: must be in (0, 1)"),
        ({"source": "books"}, "data.source: must be one of"),
        ({"synthetic": {"vocab_size": 100}}, "data.synthetic.vocab_size: must be >= 128"),
        (
            {"synthetic": {"n_rules": 600}},
            "data.synthetic.n_rules: must be <= vocab_size - 16 = 496",
        ),
        ({"synthetic": {"rules_weight": -1}}, "data.synthetic.rules_weight: must be >= 0"),
        (
            {
                "synthetic": {
                    "facts_weight": 0,
                    "rules_weight": 0,
                    "copy_weight": 0,
                    "markov_weight": 0,
                }
            },
            "data.synthetic.facts_weight: the family weights",
        ),
        ({"synthetic": {"n_facts": 10**6}}, "data.synthetic.n_facts: must be <="),
        ({"composite": {"noise_tokens": -1}}, "data.composite.noise_tokens: must be >= 0"),
    ],
)
def test_bad_configs_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(DataConfig, data, "data")
    assert str(error.value).startswith(key)


def test_build_source_validates_configs_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"^data\.path: required"):
        build_source(DataConfig(source="text"), 16, 0)
    with pytest.raises(ConfigError, match=r"^data\.synthetic\.rule_modulus"):
        build_source(DataConfig(synthetic=SyntheticConfig(rule_modulus=1)), 16, 0)


def file_error(tmp_path, source_kind: str, name: str = "f.bin", seq_len: int = 16, **keys) -> str:
    config = build(DataConfig, {"source": source_kind, "path": str(tmp_path / name), **keys}, "data")
    with pytest.raises(ConfigError) as error:
        build_source(config, seq_len, 0)
    return str(error.value)


def test_file_problems_found_when_building_name_the_path(tmp_path) -> None:
    assert (
        file_error(tmp_path, "text", "missing.txt") == f"data.path: no such file: {tmp_path / 'missing.txt'}"
    )
    (tmp_path / "f.bin").write_bytes(b"")
    assert "is empty" in file_error(tmp_path, "text")
    (tmp_path / "f.bin").write_bytes(b"x" * 100)
    short = file_error(tmp_path, "text", seq_len=16)  # the held-out 10 bytes cannot hold a row
    assert short.startswith("data.path:") and "seq_len + 1 = 17" in short
    assert "no metadata file" in file_error(tmp_path, "memmap")
    for bad in ("{", '{"dtype": "int8", "vocab_size": 5}', '{"dtype": "uint16"}', "[1]"):
        (tmp_path / "f.bin.json").write_text(bad)
        assert file_error(tmp_path, "memmap").startswith("data.path: metadata file")
    (tmp_path / "f.bin").write_bytes(b"x" * 101)
    (tmp_path / "f.bin.json").write_text('{"dtype": "uint16", "vocab_size": 5}')
    assert "not a whole number of uint16" in file_error(tmp_path, "memmap")
    write_memmap(tmp_path / "f.bin", np.full(400, 9), 10)
    (tmp_path / "f.bin.json").write_text('{"dtype": "uint16", "vocab_size": 5}')
    assert file_error(tmp_path, "memmap").startswith("data.path: ")
    assert "holds token 9, outside vocab_size 5" in file_error(tmp_path, "memmap")


def test_a_bad_token_in_the_training_part_is_reported_when_read(tmp_path) -> None:
    tokens = np.zeros(1000, dtype=np.int64)
    tokens[100] = 7  # only in the training part
    write_memmap(tmp_path / "f.bin", tokens, 8)
    (tmp_path / "f.bin.json").write_text('{"dtype": "uint16", "vocab_size": 5}')
    config = build(DataConfig, {"source": "memmap", "path": str(tmp_path / "f.bin")}, "data")
    src = build_source(config, 16, 0)  # the eval part is clean
    with pytest.raises(ConfigError, match=r"^data\.path: .* holds token 7, outside vocab_size 5"):
        for step in range(100):
            src.train_batch(step, 64)


def test_write_memmap_refuses_tokens_outside_the_vocabulary(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_memmap(tmp_path / "t.bin", np.array([0, 5]), 5)
    with pytest.raises(ValueError):
        write_memmap(tmp_path / "t.bin", np.array([0.5]), 5)
