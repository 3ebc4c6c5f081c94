"""Build a CLIP-format BPE tokenizer from a word list, offline.

Stable Diffusion's tokenizer is CLIP's byte-level BPE. The tiny test pipeline and the miniature
world cannot download it, so we train a BPE vocabulary of our own on the words they use. It keeps
CLIP's rules (lower-casing, digits split one by one, ``</w>`` end-of-word marks, BOS/EOS, 77
positions), so prompt handling, token spans and multi-token identifiers behave as with real SD.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokeniser: runs of letters, single digits, runs of other symbols.
_PRETOKEN = re.compile(r"[^\W\d_]+|\d|[^\s\w]+|_+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def pretokens(text: str) -> list[str]:
    """Split text the way CLIP does before BPE (lower-case; each digit on its own)."""
    return _PRETOKEN.findall(text.lower())


def train_bpe(words: Iterable[str]) -> list[tuple[str, str]]:
    """Learn merges until every pre-token of ``words`` is a single symbol.

    Plain BPE training (most frequent pair first, ties broken alphabetically, so it is
    deterministic). Applying the merges in rank order reproduces the training segmentation.
    """
    byte_map = _bytes_to_unicode()
    counts = Counter(t for w in words for t in pretokens(w))
    segs: dict[str, list[str]] = {}
    for tok in counts:
        chars = [byte_map[b] for b in tok.encode("utf-8")]
        chars[-1] += "</w>"
        segs[tok] = chars
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for tok, seg in segs.items():
            for pair in zip(seg, seg[1:], strict=False):
                pairs[pair] += counts[tok]
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for tok, seg in segs.items():
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
                    out.append(seg[i] + seg[i + 1])
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[tok] = out


def build_clip_tokenizer(words: Iterable[str], model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary makes each of ``words`` (split as CLIP splits) one token.

    Any other text still tokenizes, character by character, as with CLIP's byte fallback.
    """
    merges = train_bpe(words)
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
