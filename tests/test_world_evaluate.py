"""Base-model evaluation: held-out combinations really are unseen, and the scoring is wired."""

from __future__ import annotations

from styo.world.attributes import PRETRAIN_STYLES
from styo.world.evaluate import heldout_combinations, training_combinations
from styo.world.render import render_seed


def test_training_combinations_match_the_rendered_dataset():
    combos = training_combinations(50)
    for seed in range(50):
        _, style, attrs = render_seed(seed, styles=PRETRAIN_STYLES)
        assert (style, *attrs.values()) in combos


def test_heldout_combinations_are_unseen_and_style_balanced():
    seen = training_combinations(2000)
    combos = heldout_combinations(70, seen, seed=5)
    assert len(combos) == 70
    assert all((s, *a.values()) not in seen for s, a in combos)
    counts = {s: sum(c[0] == s for c in combos) for s in PRETRAIN_STYLES}
    assert set(counts.values()) == {70 // len(PRETRAIN_STYLES)}
    assert heldout_combinations(70, seen, seed=5) == combos
