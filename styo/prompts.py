"""StyO's prompts: identifiers, the contrastive disentangled templates and the augmented prompt.

The templates follow the paper (docs/design.md §1). ``negative=False`` gives the positive-only
ablation, which drops every ``not [..]`` part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIN_REPEAT, MAX_REPEAT = 1, 5


@dataclass(frozen=True)
class Identifiers:
    """The four rare key prompts: source/target style and source/target content."""

    s_src: str = "ak47"
    s_tgt: str = "aug"
    c_src: str = "sks"
    c_tgt: str = "m4a1"

    def __post_init__(self) -> None:
        words = [self.s_src, self.s_tgt, self.c_src, self.c_tgt]
        for w in words:
            if not w or any(ch.isspace() for ch in w):
                raise ValueError(f"identifier {w!r} must be one non-empty word without spaces")
        if len(set(words)) != 4:
            raise ValueError(f"the four identifiers must differ, got {words}")


DEFAULT_IDS = Identifiers()  # the paper's ak47 / aug / sks / m4a1


def _phrase(first: str, second: str, negative: bool) -> str:
    return f"{first} not {second}" if negative else first


def _check_repeat(name: str, value: int) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not MIN_REPEAT <= value <= MAX_REPEAT
    ):
        raise ValueError(
            f"{name} must be an integer from {MIN_REPEAT} to {MAX_REPEAT} (the paper uses n_s=3, n_c=1), got {value!r}"
        )


def styo_prompt(style: str, content: str, n_s: int = 1, n_c: int = 1) -> str:
    """``a drawing with (style) * n_s style of (content) * n_c portrait`` (empty content allowed)."""
    _check_repeat("n_s", n_s)
    _check_repeat("n_c", n_c)
    parts = [
        "a drawing with",
        *[style] * n_s,
        "style of",
        *([content] * n_c if content else []),
        "portrait",
    ]
    return " ".join(parts)


ROLES = ("source", "target")  # whose identifiers fill a phrase


def crossed_prompt(
    ids: Identifiers = Identifiers(), style: str = "target", content: str = "source",
    negative: bool = True, n_s: int = 1, n_c: int = 1,
) -> str:
    """The template with one image's style identifiers and one image's content identifiers
    (``"source"`` or ``"target"`` each, each phrase negated by the other image's identifier): the
    two training prompts when they agree, the stylization prompt (target style, source content)
    and its mirror when they cross. The functions below name the three that StyO uses."""
    if style not in ROLES or content not in ROLES:
        raise ValueError(f"style and content must each be 'source' or 'target', got {style!r}, {content!r}")
    s = (ids.s_src, ids.s_tgt) if style == "source" else (ids.s_tgt, ids.s_src)
    c = (ids.c_src, ids.c_tgt) if content == "source" else (ids.c_tgt, ids.c_src)
    return styo_prompt(_phrase(*s, negative), _phrase(*c, negative), n_s, n_c)


def source_prompt(
    ids: Identifiers = Identifiers(), negative: bool = True, n_s: int = 1, n_c: int = 1
) -> str:
    """Prompt bound to the source image; also the FCC reconstruction branch.

    ``n_s``/``n_c`` > 1 only for training-time augmentation, where IDL trains it repeated.
    """
    return crossed_prompt(ids, "source", "source", negative, n_s, n_c)


def target_prompt(
    ids: Identifiers = Identifiers(), negative: bool = True, n_s: int = 1, n_c: int = 1
) -> str:
    """Prompt bound to the target style image (repeated like :func:`source_prompt`)."""
    return crossed_prompt(ids, "target", "target", negative, n_s, n_c)


def aux_prompt(ids: Identifiers = Identifiers(), negative: bool = True) -> str:
    """Prompt for every auxiliary portrait: source style, generic content."""
    return styo_prompt(_phrase(ids.s_src, ids.s_tgt, negative), "")


def target_aux_prompt(ids: Identifiers = Identifiers(), negative: bool = True) -> str:
    """Prompt for the auxiliary portraits painted with the target's texture (an extension, see
    :mod:`styo.texture_transfer`): target style, generic content."""
    return styo_prompt(_phrase(ids.s_tgt, ids.s_src, negative), "")


def stylization_prompt(
    ids: Identifiers = Identifiers(), n_s: int = 1, n_c: int = 1, negative: bool = True
) -> str:
    """Target style with source content, the style phrase repeated n_s and the content n_c times."""
    return crossed_prompt(ids, "target", "source", negative, n_s, n_c)


# --- Token spans and the FCC content map ---------------------------------------------------------
# Everything below works on the pipeline's own tokenizer: an identifier may be several BPE tokens
# (CLIP splits digits: ak47 -> ak, 4, 7), and index 0 of the padded sequence is BOS.


class PromptTooLongError(ValueError):
    """A prompt does not fit the text encoder; the encoder would silently truncate it."""


def _token_ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special, verbose=False).input_ids)


def check_length(tokenizer: Any, prompt: str) -> int:
    """Return the prompt's token count (BOS/EOS included); raise if it exceeds the encoder's limit.

    diffusers' ``encode_prompt`` truncates at ``model_max_length`` with only a log warning, which
    would drop content tokens (and their FCC indices) without anyone noticing.
    """
    count = len(_token_ids(tokenizer, prompt, special=True))
    limit = tokenizer.model_max_length
    if count > limit:
        raise PromptTooLongError(
            f"prompt {prompt!r} has {count} tokens (BOS/EOS included) but the text encoder takes "
            f"at most {limit}; use smaller n_s/n_c or shorter identifiers"
        )
    return count


def word_token_spans(tokenizer: Any, prompt: str) -> list[tuple[str, list[int]]]:
    """Each whitespace word of ``prompt`` with its token indices in the padded sequence (BOS = 0).

    Words are tokenised one by one and the counts accumulated, so a multi-token identifier gets
    all its indices; the concatenation is checked against tokenising the whole prompt.
    """
    check_length(tokenizer, prompt)
    spans: list[tuple[str, list[int]]] = []
    ids: list[int] = []
    for word in prompt.split():
        word_ids = _token_ids(tokenizer, word, special=False)
        start = 1 + len(ids)
        spans.append((word, list(range(start, start + len(word_ids)))))
        ids.extend(word_ids)
    full = _token_ids(tokenizer, prompt, special=False)
    if ids != full:
        raise RuntimeError(
            f"word-by-word tokenisation of {prompt!r} differs from the whole prompt's "
            f"({ids} != {full}); token spans would be wrong"
        )
    return spans


def _content_phrase(ids: Identifiers, negative: bool) -> list[str]:
    return _phrase(ids.c_src, ids.c_tgt, negative).split()


def _pair_words(sty: tuple[str, list[int]], rec: tuple[str, list[int]]) -> list[tuple[int, int]]:
    if sty[0] != rec[0] or len(sty[1]) != len(rec[1]):
        raise RuntimeError(f"content word mismatch between prompts: {sty} vs {rec}")
    return list(zip(sty[1], rec[1], strict=True))


def content_index_map(
    tokenizer: Any,
    ids: Identifiers = Identifiers(),
    n_s: int = 1,
    n_c: int = 1,
    negative: bool = True,
    rec_n_s: int = 1,
    rec_n_c: int = 1,
) -> list[tuple[int, int]]:
    """(stylization index, reconstruction index) for every token of every content word.

    Content words are ``[C_src] not [C_tgt]`` (only ``[C_src]`` when ``negative=False``) and
    ``portrait``. The reconstruction prompt is the source prompt, repeated ``rec_n_s``/``rec_n_c``
    times when IDL trained it so (training-time augmentation); with the default single phrase,
    each of the n_c repetitions maps to it, otherwise repetition k maps to repetition
    ``k mod rec_n_c``. The phrases are located from the end of the prompts
    (``... (content) * n_c portrait``), which the templates fix, and each word is checked by its text.
    """
    rec_spans = word_token_spans(tokenizer, source_prompt(ids, negative, rec_n_s, rec_n_c))
    sty_spans = word_token_spans(tokenizer, stylization_prompt(ids, n_s, n_c, negative))
    phrase = _content_phrase(ids, negative)
    size = len(phrase)
    rec_block = rec_spans[-1 - rec_n_c * size : -1]
    sty_block = sty_spans[-1 - n_c * size : -1]
    if [w for w, _ in sty_block] != phrase * n_c or [w for w, _ in rec_block] != phrase * rec_n_c:
        raise RuntimeError(f"content phrase {phrase} not found where the templates put it")
    pairs: list[tuple[int, int]] = []
    for k, sty_word in enumerate(sty_block):
        pairs += _pair_words(sty_word, rec_block[k % len(rec_block)])
    pairs += _pair_words(sty_spans[-1], rec_spans[-1])
    return pairs


def common_word_identifiers(tokenizer: Any, ids: Identifiers = Identifiers()) -> list[str]:
    """Identifiers that are probably ordinary words, so they carry a prior meaning (warn only).

    Offline we cannot ask how frequent a token was in pretraining. Heuristic: an identifier that
    is a single vocabulary token made only of letters and at least 4 letters long is likely a real
    word (e.g. ``face``); rare keys such as ``sks`` (short) or ``ak47`` (digits, several tokens)
    pass.
    """
    words = [ids.s_src, ids.s_tgt, ids.c_src, ids.c_tgt]
    return [
        w
        for w in words
        if w.isalpha() and len(w) >= 4 and len(_token_ids(tokenizer, w, special=False)) == 1
    ]
