"""Token spans, the FCC content map and prompt-length checks, against the tokenizer itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from styo.prompts import (
    Identifiers,
    PromptTooLongError,
    check_length,
    common_word_identifiers,
    content_index_map,
    source_prompt,
    stylization_prompt,
    word_token_spans,
)
from styo.testing import tiny_pipeline


@pytest.fixture(scope="module")
def tok():
    return tiny_pipeline().tokenizer


def padded(tok, prompt: str) -> list[int]:
    return tok(prompt, padding="max_length", max_length=tok.model_max_length).input_ids


def word_ids(tok, word: str) -> list[int]:
    return tok(word, add_special_tokens=False).input_ids


def test_spans_match_padded_sequence(tok):
    prompt = source_prompt()
    ids = padded(tok, prompt)
    spans = word_token_spans(tok, prompt)
    assert [w for w, _ in spans] == prompt.split()
    assert spans[0][1] == [1] and ids[0] == tok.bos_token_id
    flat = [i for _, idx in spans for i in idx]
    assert flat == list(range(1, len(flat) + 1))
    assert ids[len(flat) + 1] == tok.eos_token_id
    for word, idx in spans:
        assert [ids[i] for i in idx] == word_ids(tok, word)


def test_multi_token_identifiers(tok):
    spans = dict(word_token_spans(tok, "ak47 m4a1 sks"))
    assert spans["ak47"] == [1, 2, 3]
    assert spans["m4a1"] == [4, 5, 6, 7]
    assert spans["sks"] == [8]
    assert tok.convert_ids_to_tokens(word_ids(tok, "m4a1")) == ["m</w>", "4</w>", "a</w>", "1</w>"]


def test_word_by_word_mismatch_is_an_error():
    # A tokenizer that merges across spaces breaks the per-word accumulation: must raise.
    def call(text, add_special_tokens=True, verbose=False):
        toks = [len(text.replace(" ", ""))] if " " in text else [len(text)]
        return SimpleNamespace(input_ids=[0, *toks, 1] if add_special_tokens else toks)

    fake = type("Fake", (), {"model_max_length": 77, "__call__": staticmethod(call)})()
    with pytest.raises(RuntimeError, match="differs"):
        word_token_spans(fake, "a bb")


def _content_run(tok, ids: list[int], phrase: list[str], start: int) -> list[int]:
    """Indices of the first occurrence of the phrase's tokens at or after ``start``."""
    seq = [t for w in phrase for t in word_ids(tok, w)]
    for i in range(start, len(ids) - len(seq) + 1):
        if ids[i : i + len(seq)] == seq:
            return list(range(i, i + len(seq)))
    raise AssertionError(f"{phrase} not found")


def test_content_map_augmented_prompt(tok):
    n_s, n_c = 3, 2
    rec, sty = source_prompt(), stylization_prompt(n_s=n_s, n_c=n_c)
    rec_ids, sty_ids = padded(tok, rec), padded(tok, sty)
    pairs = content_index_map(tok, Identifiers(), n_s, n_c)
    for i, j in pairs:
        assert sty_ids[i] == rec_ids[j]
    of = word_ids(tok, "of")[0]
    phrase = ["sks", "not", "m4a1"]
    rec_run = _content_run(tok, rec_ids, phrase, rec_ids.index(of))
    sty_runs, start = [], sty_ids.index(of)
    for _ in range(n_c):
        run = _content_run(tok, sty_ids, phrase, start)
        sty_runs.append(run)
        start = run[-1] + 1
    portrait = word_ids(tok, "portrait")[0]
    expected = [(s, r) for run in sty_runs for s, r in zip(run, rec_run, strict=True)]
    expected.append((sty_ids.index(portrait), rec_ids.index(portrait)))
    assert pairs == expected
    assert len(pairs) == n_c * (1 + 1 + 4) + 1  # sks, not, m, 4, a, 1 per phrase + portrait
    # every repetition maps onto the one source phrase
    assert {r for s, r in pairs} == set(rec_run) | {rec_ids.index(portrait)}
    # style tokens (including the style phrases' "not") are never controlled
    assert min(s for s, _ in pairs) > sty_ids.index(of)


def test_content_map_without_augmentation_is_positional(tok):
    pairs = content_index_map(tok, Identifiers(), 1, 1)
    assert all(s == r for s, r in pairs)
    spans = word_token_spans(tok, source_prompt())
    assert [w for w, _ in spans[-4:]] == ["sks", "not", "m4a1", "portrait"]
    assert [r for _, r in pairs] == [i for _, idx in spans[-4:] for i in idx]


def test_content_map_positive_only(tok):
    pairs = content_index_map(tok, Identifiers(), 3, 2, negative=False)
    rec_ids = padded(tok, source_prompt(negative=False))
    sty_ids = padded(tok, stylization_prompt(n_s=3, n_c=2, negative=False))
    sks, portrait, nots = (word_ids(tok, w)[0] for w in ("sks", "portrait", "not"))
    assert [(sty_ids[s], rec_ids[r]) for s, r in pairs] == [(sks, sks)] * 2 + [(portrait, portrait)]
    assert len({r for _, r in pairs if rec_ids[r] == sks}) == 1
    assert nots not in sty_ids


def test_overflow_is_an_error_naming_the_prompt(tok):
    prompt = " ".join(["portrait"] * 80)
    with pytest.raises(PromptTooLongError) as err:
        check_length(tok, prompt)
    msg = str(err.value)
    assert prompt in msg and "82" in msg and "77" in msg and "n_s" in msg
    assert check_length(tok, source_prompt()) == 19


def test_long_identifiers_overflow_in_content_map(tok):
    ids = Identifiers(c_src="zqzqzqzqzqzq")
    with pytest.raises(PromptTooLongError, match="zqzqzqzqzqzq"):
        content_index_map(tok, ids, n_s=5, n_c=5)


@pytest.mark.parametrize("bad", [0, 6, 1.5, True, "3"])
def test_repeat_counts_out_of_range(tok, bad):
    with pytest.raises(ValueError, match="n_s"):
        stylization_prompt(n_s=bad)
    with pytest.raises(ValueError, match="n_c"):
        content_index_map(tok, Identifiers(), 1, bad)


def test_common_word_identifiers(tok):
    assert common_word_identifiers(tok) == []
    ids = Identifiers(s_src="portrait", c_src="face", c_tgt="xyzw")
    assert common_word_identifiers(tok, ids) == ["portrait", "face"]


def test_content_map_after_training_time_augmentation_pairs_repetition_with_repetition(tok):
    """IDL trained the source prompt repeated (train_n_s=3, train_n_c=2): the reconstruction
    branch reads that prompt, and content repetition k takes the maps of its repetition k."""
    rec = source_prompt(n_s=3, n_c=2)
    assert rec == "a drawing with ak47 not aug ak47 not aug ak47 not aug style of sks not m4a1 sks not m4a1 portrait"
    rec_ids, sty_ids = padded(tok, rec), padded(tok, stylization_prompt(n_s=3, n_c=2))
    pairs = content_index_map(tok, Identifiers(), 3, 2, rec_n_s=3, rec_n_c=2)
    assert all(sty_ids[s] == rec_ids[r] for s, r in pairs)
    assert len({r for _, r in pairs}) == len(pairs)  # one-to-one: no repetition shares a map
    # both prompts have the same tokens before "of" (ak47/aug swapped), so the pairs are positional
    assert all(s == r for s, r in pairs)
    # a reconstruction with fewer repetitions than the stylization prompt wraps around
    wrap = content_index_map(tok, Identifiers(), 1, 3, rec_n_c=2)
    rec2 = padded(tok, source_prompt(n_c=2))
    first = [r for _, r in wrap[:6]]
    assert [r for _, r in wrap[12:18]] == first != [r for _, r in wrap[6:12]]
    assert all(padded(tok, stylization_prompt(n_c=3))[s] == rec2[r] for s, r in wrap)
