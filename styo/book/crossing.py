"""Which identifier carries what: IDL's split, read by crossing the identifiers.

IDL means ``[S_src]``/``[S_tgt]`` to carry a style and ``[C_src]``/``[C_tgt]`` a face. After a run,
cross them: draw from pure noise with each of the four prompts (the source's or the target's style
identifiers × the source's or the target's content identifiers), all from the same noise, and let
the judges read the pictures. If the split worked, swapping the style identifiers swaps the style
and leaves the face, and swapping the content identifiers swaps the face and leaves the style. The
(target style, source content) corner is StyO's stylization prompt drawn without the source
picture and without FCC: what the identifiers alone have learned.

Four effects sum a crossing up, each a difference of two judged scores averaged over the other
identifier's two settings (``style``: the target style's probability; ``face``: the share of the
source's attributes):

- ``style_by_style_ids``: how much the style identifiers move the style (the split wants 1);
- ``face_by_content_ids``: how much the content identifiers move the face (the split wants 1);
- ``style_by_content_ids`` and ``face_by_style_ids``: how much each moves the *other* factor
  (the split wants 0).

How a crossing is read (:func:`carriers`) and tabulated lives in :mod:`styo.book.results`, beside
the other studies' readings, so that a committed study renders without torch. Nothing here is
part of StyO itself; :mod:`styo.book.experiments` holds the other scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from ..profiles import PAPER_SD
from ..prompts import DEFAULT_IDS, ROLES, Identifiers, crossed_prompt
from .results import CARRIES, EFFECTS, carriers, crossing_markdown, crossing_summary


def crossed_prompts(ids: Identifiers = DEFAULT_IDS, negative: bool = True,
                    ) -> dict[tuple[str, str], str]:
    """``{(style role, content role): prompt}``: IDL's two training prompts and their two crossings.

    ``("source", "source")`` is the source's training prompt, ``("target", "target")`` the
    target's, ``("target", "source")`` the stylization prompt (``n_s = n_c = 1``).
    """
    return {(s, c): crossed_prompt(ids, s, c, negative) for s in ROLES for c in ROLES}


def same_words(tokenizer: Any, ids: Identifiers = DEFAULT_IDS, negative: bool = True) -> bool:
    """Whether the source's and the target's training prompts hold the same tokens, in another
    order. With the negatives they do: ``[S_src] not [S_tgt]`` and ``[S_tgt] not [S_src]`` differ
    only in order, so only the positions tell the two training images apart."""
    prompts = crossed_prompts(ids, negative)
    source, target = (prompts[(r, r)] for r in ROLES)
    return sorted(tokenizer.tokenize(source)) == sorted(tokenizer.tokenize(target))


@dataclass
class Crossing:
    """The four crossed prompts of one run, their pictures, and (with judges) scores and effects."""

    prompts: dict[tuple[str, str], str]
    images: dict[tuple[str, str], list[Image.Image]]
    scores: dict[tuple[str, str], dict[str, float]]
    effects: dict[str, float]


def crossing_effects(scores: Mapping[tuple[str, str], Mapping[str, float]]) -> dict[str, float]:
    """The four effects (module docstring) from the judged ``style`` and ``content`` of each cell."""
    def style(s: str, c: str) -> float:
        return scores[(s, c)]["style"]

    def face(s: str, c: str) -> float:
        return scores[(s, c)]["content"]

    def mean(values: Sequence[float]) -> float:
        return float(sum(values) / len(values))

    return {
        "style_by_style_ids": mean([style("target", c) - style("source", c) for c in ROLES]),
        "face_by_content_ids": mean([face(s, "source") - face(s, "target") for s in ROLES]),
        "style_by_content_ids": mean([style(s, "target") - style(s, "source") for s in ROLES]),
        "face_by_style_ids": mean([face("source", c) - face("target", c) for c in ROLES]),
    }


def cross_identifiers(
    pipe: Any,
    pair: Any = None,
    *,
    judges: Any = None,
    ids: Identifiers = DEFAULT_IDS,
    negative: bool = True,
    num_images: int = 4,
    seed: int = 0,
    num_inference_steps: int = PAPER_SD["sample_steps"],
    guidance_scale: float = PAPER_SD["guidance"],
) -> Crossing:
    """Draw ``num_images`` pictures from pure noise for each crossed prompt, the same noise for
    all four, with the pipeline as it stands (fine-tuned by an IDL run); score them when ``judges``
    are given and ``pair`` has known attributes (the miniature world)."""
    import torch

    from .experiments import score_pair

    prompts = crossed_prompts(ids, negative)
    images, scores = {}, {}
    for cell, prompt in prompts.items():
        generator = torch.Generator("cpu").manual_seed(seed)
        images[cell] = pipe(prompt, num_images_per_prompt=num_images, generator=generator,
                            num_inference_steps=num_inference_steps,
                            guidance_scale=guidance_scale).images
        if judges is not None and pair is not None and pair.source_attributes:
            scores[cell] = score_pair(judges, images[cell], pair)
    effects = crossing_effects(scores) if len(scores) == len(prompts) else {}
    return Crossing(prompts, images, scores, effects)


def identifier_crossings(
    pipe: Any,
    pairs: Mapping[str, Any],
    aux: Sequence[Image.Image] | Mapping[Any, Sequence[Image.Image]],
    config: Any,
    *,
    variants: Mapping[str, Mapping[str, Any]],
    progress: bool = True,
    **crossing_kwargs: Any,
) -> dict[str, dict[str, Crossing]]:
    """``{variant: {pair: Crossing}}`` for every IDL variant's run on every pair, each run loaded
    through :func:`styo.book.cached_idl` (trained once, as :func:`~styo.book.experiments.ablation_rows`
    trains them) from the base weights, which ``pipe`` holds again afterwards. A variant without
    negative identifiers is crossed with positive-only prompts."""
    from .chapters import cached_idl
    from .experiments import base_weights, pair_aux

    out: dict[str, dict[str, Crossing]] = {}
    for name, fields in variants.items():
        run_config = replace(config, **fields)
        out[name] = {}
        for label, pair in pairs.items():
            with base_weights(pipe):
                cached_idl(pipe, pair.source, pair.target,
                           pair_aux(aux, pair) if run_config.use_aux else [], run_config,
                           progress=progress)
                out[name][label] = cross_identifiers(pipe, pair, negative=run_config.negative,
                                                     **crossing_kwargs)
    return out


def crossing_grid(crossing: Crossing, size: float = 2.4):
    """The first picture of each crossed prompt, as a 2 × 2 figure: rows by style identifiers,
    columns by content identifiers, each titled with its judged target style and source face."""
    from .viz import show_grid

    cells = [(s, c) for s in ROLES for c in ROLES]
    titles = []
    for cell in cells:
        score = crossing.scores.get(cell)
        head = f"content ids: {cell[1]}"
        titles.append(head if score is None else
                      f"{head}\nstyle {score['style']:.2f}, face {score['content']:.2f}")
    return show_grid([crossing.images[cell][0] for cell in cells], titles, cols=2, size=size,
                     row_labels=[f"style ids: {s}" for s in ROLES])


__all__ = ["CARRIES", "EFFECTS", "ROLES", "Crossing", "carriers", "cross_identifiers", "crossed_prompts",
           "crossing_effects", "crossing_grid", "crossing_markdown", "crossing_summary",
           "identifier_crossings", "same_words"]
