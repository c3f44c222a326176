from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomalib_ncd.data.splits import name_key, select_train_names

NAMES = [f"img_{index}.png" for index in range(10)]


def test_golden_selection_pins_the_documented_rule() -> None:
    # SHA-256 based, so these exact values hold on every machine and Python version.
    assert sorted(select_train_names(NAMES, 0.5, seed=0)) == [
        "img_0.png",
        "img_2.png",
        "img_4.png",
        "img_6.png",
        "img_9.png",
    ]
    assert sorted(select_train_names(NAMES, 0.5, seed=1)) == [
        "img_0.png",
        "img_3.png",
        "img_4.png",
        "img_6.png",
        "img_7.png",
    ]


def test_key_is_sha256_of_seed_and_name() -> None:
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"3:a.png").digest(), "big")
    assert name_key("a.png", 3) == expected


@pytest.mark.parametrize(("count", "fraction", "expected"), [(10, 0.8, 8), (952, 0.8, 762), (5, 0.5, 3), (3, 0.0, 0)])
def test_count_is_fraction_rounded_half_up(count: int, fraction: float, expected: int) -> None:
    names = [f"n{index}" for index in range(count)]
    assert len(select_train_names(names, fraction)) == expected


def test_all_or_nothing_fractions() -> None:
    assert select_train_names(NAMES, 1.0) == set(NAMES)
    assert select_train_names(NAMES, 0.0) == set()


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_rejects_fraction_outside_unit_interval(fraction: float) -> None:
    with pytest.raises(ValueError, match="train_fraction"):
        select_train_names(NAMES, fraction)


def test_duplicates_count_once() -> None:
    assert select_train_names(NAMES + NAMES, 0.5) == select_train_names(NAMES, 0.5)


def test_seed_changes_selection() -> None:
    names = [f"n{index}" for index in range(100)]
    assert select_train_names(names, 0.5, seed=0) != select_train_names(names, 0.5, seed=1)


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True),
    fraction=st.floats(0, 1),
    seed=st.integers(0, 2**31),
    permutation_seed=st.randoms(use_true_random=False),
)
def test_independent_of_input_order(names: list[str], fraction: float, seed: int, permutation_seed) -> None:
    shuffled = list(names)
    permutation_seed.shuffle(shuffled)
    chosen = select_train_names(names, fraction, seed)
    assert chosen == select_train_names(shuffled, fraction, seed)
    assert chosen <= set(names)


def test_adding_a_name_moves_at_most_one_other() -> None:
    names = [f"n{index}" for index in range(50)]
    before = select_train_names(names, 0.8)
    after = select_train_names([*names, "new"], 0.8)
    assert len(before - after) <= 1
