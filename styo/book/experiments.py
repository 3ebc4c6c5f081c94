"""The book's measuring bench: stylize under several settings, score with the judges, tabulate.

The FCC, augmented-prompt and ablation chapters all do the same things: run
:func:`styo.fcc.stylize` on one (source, target) pair for a list of settings, score each batch of
images with the miniature world's judges, and show the numbers. This module does them once and
returns *tidy rows*: one dict per setting, holding the setting's values, the scores and the images,
so that notebook cells stay a few lines long. Nothing here is part of StyO itself.

Scores (all in [0, 1]; see :mod:`styo.world.judges`):

- ``content``: content fidelity, the share of the source's attributes the judge reads in the image;
- ``pose``: the share of images whose judged head tilt is the source's: the layout that the paper
  says FCC keeps (head pose), scored on its own because ``content`` averages it with colours;
- ``leak``: the share of the attributes in which the target differs from the source where the
  judge reads the *target's* value (the failure FCC exists to fix);
- ``style``: the judge's probability of the target style; ``source_style`` that of the source's
  style, ``other_style`` the rest (a third, pretrained style pulled in);
- ``geometry``: the mean IoU of each image's head mask with the source's (the segmentation judge);
- ``joint``: the share of images that are stylizations at all (:func:`joint_success`): the target
  style, most of the source's attributes and its head where the source has it, together;
- ``diversity``: mean pairwise RMS pixel distance between the images of one setting (0 for one).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..fcc import stylize
from ..idl import IDLConfig
from .results import FULL_IDL, full_method

METRICS = ("content", "pose", "leak", "style", "source_style", "other_style", "geometry", "joint",
           "diversity")

# The three training variants of the paper's Fig. 6 (IDLConfig fields they set).
IDL_VARIANTS: dict[str, dict[str, bool]] = {
    "positive-only": {"negative": False, "use_aux": False},
    "contrastive": {"negative": True, "use_aux": False},
    "contrastive + aux": {"negative": True, "use_aux": True},
}


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _rms(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x - y) ** 2)))


def diversity(images: Sequence[Image.Image]) -> float:
    """Mean RMS distance (pixel values in [0, 1]) over all pairs of images; 0 for fewer than two."""
    pairs = list(itertools.combinations([_pixels(im) for im in images], 2))
    return float(np.mean([_rms(x, y) for x, y in pairs])) if pairs else 0.0


def distance(images: Sequence[Image.Image], others: Sequence[Image.Image]) -> float:
    """Mean RMS distance (pixel values in [0, 1]) between matching images of two equal-length
    batches: how far one setting moved the pictures that another drew from the same noise."""
    if len(images) != len(others) or not images:
        raise ValueError(f"need two non-empty batches of equal length, got {len(images)} and {len(others)}")
    return float(np.mean([_rms(_pixels(a), _pixels(b)) for a, b in zip(images, others, strict=True)]))


def score(
    judges: Any,
    images: Sequence[Image.Image],
    *,
    source_attributes: Mapping[str, str] | None = None,
    target_attributes: Mapping[str, str] | None = None,
    target_style: str | None = None,
    source_style: str | None = None,
    segmenter: Any = None,
    source: Image.Image | None = None,
) -> dict[str, float]:
    """The scores of one batch of images (see the module docstring); only those the inputs allow:
    ``geometry`` needs the ``segmenter`` and the ``source`` picture, ``joint`` those as well as the
    source's attributes and the target style."""
    from ..world.attributes import STYLES
    from ..world.judges import content_fidelity

    images = list(images)
    if not images:
        raise ValueError("no images to score")
    out: dict[str, float] = {}
    if source_attributes:
        out["content"] = content_fidelity(judges, images, dict(source_attributes))
        if "head_tilt" in source_attributes:
            out["pose"] = content_fidelity(judges, images, dict(source_attributes), ["head_tilt"])
        if target_attributes:
            differ = [k for k, v in target_attributes.items() if source_attributes.get(k) != v]
            if differ:
                out["leak"] = content_fidelity(judges, images, dict(target_attributes), differ)
    if target_style or source_style:
        probs = judges.probabilities(images)["style"].mean(0)
        p = dict(zip(STYLES, probs.tolist(), strict=True))
        if target_style:
            out["style"] = p[target_style]
        if source_style:
            out["source_style"] = p[source_style]
        out["other_style"] = 1.0 - sum(p[s] for s in {target_style, source_style} if s)
    if segmenter is not None and source is not None:
        ious = head_iou(segmenter, images, source)
        out["geometry"] = float(np.mean(ious))
        if source_attributes and target_style:
            out["joint"] = float(np.mean(joint_success(judges, images, ious, source_attributes,
                                                       target_style)))
    out["diversity"] = diversity(images)
    return out


# A stylization counts as a success only when it does both halves of the job: the target's style
# *and* the source's face. Content or style alone can be had by doing nothing (the source back) or
# by copying the target; the joint score cannot.
JOINT_ATTRIBUTES = 0.7  # share of the source's attributes a success keeps
JOINT_HEAD_IOU = 0.6  # IoU of its head mask with the source's


def head_iou(segmenter: Any, images: Sequence[Image.Image], source: Image.Image) -> list[float]:
    """Per picture, the IoU of its head mask with the source's (the segmentation judge's ``head``:
    face, hair, eyes, mouth and glasses): where the head is and how big, whatever the style."""
    masks = segmenter.masks([source, *images])
    src = masks[0]["head"]
    out = []
    for m in masks[1:]:
        union = np.logical_or(src, m["head"]).sum()
        out.append(float(np.logical_and(src, m["head"]).sum() / union) if union else 0.0)
    return out


def head_follow(segmenter: Any, outputs: Mapping[Any, Any]) -> dict[Any, float]:
    """Per sampling (a :class:`styo.fcc.Stylization` under any key), the mean IoU of each stylized
    picture's head mask with that of its reconstruction-branch twin, which started from the same
    noise: how closely the head follows the branch FCC copies the content maps from. From pure
    noise (strength 1.0) nothing else ties the two heads together."""
    return {key: float(np.mean([head_iou(segmenter, [image], twin)[0]
                                for image, twin in zip(out.images, out.reconstructions, strict=True)]))
            for key, out in outputs.items()}


SHARED_SELF_ATTENTION = "self-attention"  # head_follow's key for FCC plus the shared self-attention


def follow_markdown(follow: Mapping[Any, float], strength: float,
                    self_attention_steps: tuple[float, float] | None = None) -> str:
    """Sentences on :func:`head_follow` without (``False``) and with (``True``) FCC and, when
    ``follow`` has it, with FCC plus the reconstruction's self-attention maps over
    ``self_attention_steps`` (key :data:`SHARED_SELF_ATTENTION`, an extension)."""
    off, on = follow[False], follow[True]
    text = (f"From strength {float(strength)}, the stylized head overlaps the reconstruction's with IoU "
            f"{off:.2f} without FCC and {on:.2f} with it: FCC's copied maps "
            + ("pull the head to where the reconstruction drew it." if on - off >= 0.05 else
               "move the head little on this pair." if on - off > -0.05 else
               "do not pull the head toward the reconstruction's on this pair."))
    if SHARED_SELF_ATTENTION not in follow:
        return text
    shared = follow[SHARED_SELF_ATTENTION]
    lo, hi = self_attention_steps or (0.0, 1.0)
    window = f"steps {lo:.0%} to {hi:.0%} of the way" if lo else f"the first {hi:.0%} of the steps"
    return (text + f" With the reconstruction's self-attention maps as well, over {window} (an extension, "
            f"not the paper's method), the overlap is {shared:.2f}: "
            + ("the head follows, so on this model the layout is drawn by self-attention, which FCC leaves "
               "alone." if shared - on >= 0.05 else
               "self-attention does not carry the layout on this pair either."))


def joint_success(judges: Any, images: Sequence[Image.Image], head_ious: Sequence[float],
                  source_attributes: Mapping[str, str], target_style: str) -> list[bool]:
    """Per picture, whether it is a stylization at all: judged in ``target_style`` (the most
    probable style), with at least :data:`JOINT_ATTRIBUTES` of the source's attributes and a head
    mask within :data:`JOINT_HEAD_IOU` IoU of the source's (``head_ious``, from :func:`head_iou`).
    The share of successes is ``joint``."""
    from ..world.attributes import ATTRIBUTES, STYLES

    predicted = judges.predict_indices(list(images))
    names = [n for n in ATTRIBUTES if n in source_attributes]
    kept = np.mean([(predicted[n] == ATTRIBUTES[n].index(source_attributes[n])).numpy() for n in names], 0)
    styled = (predicted["style"] == STYLES.index(target_style)).numpy()
    placed = np.asarray(head_ious) >= JOINT_HEAD_IOU
    return [bool(x) for x in styled & (kept >= JOINT_ATTRIBUTES) & placed]


def face_variety(judges: Any, images: Sequence[Image.Image]) -> dict[str, int]:
    """How many different faces a set of portraits shows, as the judges read them: per attribute,
    how many of its values occur in the set, and under ``"combinations"`` how many different
    combinations of all of them. The auxiliary set's job is to show the source's style on many
    faces, which a set of a few faces drawn again and again does less well."""
    from ..world.attributes import ATTRIBUTES

    images = list(images)
    if not images:
        raise ValueError("no images to read")
    predicted = judges.predict_indices(images)
    out = {name: len(set(predicted[name].tolist())) for name in ATTRIBUTES}
    out["combinations"] = len({tuple(int(predicted[n][i]) for n in ATTRIBUTES) for i in range(len(images))})
    return out


def score_pair(judges: Any, images: Sequence[Image.Image], pair: Any, segmenter: Any = None
               ) -> dict[str, float]:
    """:func:`score` with the attributes, styles and source picture of an
    :class:`styo.book.ExamplePair`; ``geometry`` and ``joint`` too when a ``segmenter`` is given."""
    return score(
        judges,
        images,
        source_attributes=pair.source_attributes,
        target_attributes=pair.target_attributes,
        target_style=pair.target_style,
        source_style=pair.source_style,
        segmenter=segmenter,
        source=pair.source if segmenter is not None else None,
    )


IDEAL_SCORES = ("joint", "style", "content", "geometry")  # what ideal_rows scores per pair


def ideal_rows(pipe: Any, pairs: Mapping[str, Any], judges: Any, segmenter: Any) -> list[dict[str, Any]]:
    """Per pair with a known answer (``pair.ideal``), the scores of the picture a perfect stylization
    would show, passed through the model's autoencoder as every generated picture is.

    This is each score's ceiling on the pair: if the judges could not read a face in the target
    style, or the codec lost it, a target on the method's scores would be out of reach by
    construction, and this is where it would show."""
    import torch

    from ..world.evaluate import reconstruct

    rows = []
    for label, pair in pairs.items():
        if pair.ideal is None:
            continue
        with torch.no_grad():
            image = reconstruct(pipe.vae, [pair.ideal])[0]
        scores = score_pair(judges, [image], pair, segmenter)
        rows.append({"pair": label, **{k: scores[k] for k in IDEAL_SCORES}})
    return rows


def stylize_rows(
    pipe: Any,
    pair: Any,
    settings: Sequence[Mapping[str, Any]],
    *,
    judges: Any = None,
    segmenter: Any = None,
    progress: bool = True,
    **common: Any,
) -> list[dict[str, Any]]:
    """One row per setting: ``stylize(pipe, pair.source, **common, **setting)``, scored.

    A row holds the setting's keys, ``images`` and ``reconstruction`` and, when ``judges`` is given
    and the pair has known attributes (the miniature world), the scores (``geometry`` and ``joint``
    too with the ``segmenter``). Settings share ``seed``
    (from ``common``), so they start from the same noise and differ only in what they set.
    """
    rows = []
    for setting in tqdm(settings, desc="stylize", disable=not progress, leave=False):
        out = stylize(pipe, pair.source, **{**common, **setting})
        row: dict[str, Any] = dict(setting)
        row["images"] = out.images
        row["reconstruction"] = out.reconstruction
        row["reconstructions"] = out.reconstructions
        if judges is not None and pair.source_attributes:
            row.update(score_pair(judges, out.images, pair, segmenter=segmenter))
        rows.append(row)
    return rows


def snapshot_weights(pipe: Any, device: str | None = "cpu") -> dict[str, dict[str, Any]]:
    """A copy of the UNet and text encoder weights (on ``device``; ``None``: where they are).

    IDL fine-tunes a pipeline in place, so a chapter that trains several runs on one pipeline
    takes a snapshot of the *base* weights first and restores it before each run.
    """
    return {
        name: {k: v.detach().to(device or v.device, copy=True)
               for k, v in getattr(pipe, name).state_dict().items()}
        for name in ("unet", "text_encoder")
    }


def restore_weights(pipe: Any, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
    """Put the weights of :func:`snapshot_weights` back into ``pipe``."""
    for name, state in snapshot.items():
        getattr(pipe, name).load_state_dict(state)


@contextmanager
def base_weights(pipe: Any) -> Iterator[Any]:
    """Restore the UNet and text encoder weights that ``pipe`` has on entry, on exit.

    The copy is kept in CPU memory: on a 15 GB GPU a second copy of SD's UNet would leave too
    little room for fine-tuning it.
    """
    saved = snapshot_weights(pipe, device="cpu")
    try:
        yield pipe
    finally:
        restore_weights(pipe, saved)


def ablation_rows(
    pipe: Any,
    pairs: Mapping[str, Any],
    aux: Sequence[Image.Image] | Mapping[Any, Sequence[Image.Image]],
    config: IDLConfig,
    *,
    variants: Mapping[str, Mapping[str, Any]] = IDL_VARIANTS,
    fcc: Sequence[bool] = (False, True),
    judges: Any = None,
    segmenter: Any = None,
    progress: bool = True,
    **stylize_kwargs: Any,
) -> list[dict[str, Any]]:
    """Train every IDL variant on every pair (cached), stylize with and without FCC, score.

    ``pairs`` maps a label to an :class:`styo.book.ExamplePair`; ``aux`` is one auxiliary set, or
    one per source style (:func:`pair_aux`); ``variants`` maps a label to
    :class:`~styo.idl.IDLConfig` fields that replace those of ``config``. ``pipe`` must hold the
    *base* weights: each run starts from them (they are restored afterwards) and goes through
    :func:`styo.book.cached_idl`, so a run another chapter trained with the same settings is
    loaded, not trained again. A variant without negative identifiers is also *sampled* with
    positive-only prompts. Rows hold ``pair``, ``variant``, ``fcc``, the final ``idl_loss`` (mean
    of the last tenth of the steps), the images and the scores (with the ``segmenter``, the joint
    score and the geometry that the identifier and FCC claims are read from).
    """
    from .chapters import cached_idl

    rows = []
    for label, pair in pairs.items():
        for name, fields in variants.items():
            run_config = replace(config, **fields)
            with base_weights(pipe):
                run = cached_idl(pipe, pair.source, pair.target, pair_aux(aux, pair), run_config,
                                 progress=progress)
                tail = run.losses[-max(1, len(run.losses) // 10):]
                settings = [{"fcc": f} for f in fcc]
                for row in stylize_rows(pipe, pair, settings, judges=judges, segmenter=segmenter,
                                        progress=False, negative=run_config.negative,
                                        **stylize_kwargs):
                    rows.append({"pair": label, "variant": name, "idl_loss": float(np.mean(tail)),
                                 **row})
    return rows


def contrasting_attributes(seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """A random source and a target that differs from it in *every* attribute (so leaks show)."""
    from ..world.attributes import ATTRIBUTES

    rng = np.random.default_rng(seed)
    source, target = {}, {}
    for name, values in ATTRIBUTES.items():
        source[name] = values[int(rng.integers(len(values)))]
        others = [v for v in values if v != source[name]]
        target[name] = others[int(rng.integers(len(others)))]
    return source, target


BOOK_SOURCE_STYLE = "photo"  # the book's source face, the study's first pair


def ablation_seeds(n_pairs: int) -> list[int]:
    """Seeds of the contrasting pairs that follow the book's pair: 1, 8, 15, ... (``n_pairs - 1``)."""
    return [1 + 7 * k for k in range(n_pairs - 1)]


def ablation_pairs(
    backend: str,
    pair_seeds: Sequence[int] = (1, 8),
    target_styles: Sequence[str] = ("mosaic", "halftone"),
    pipe: Any = None,
    *,
    source_styles: Sequence[str] | None = None,
    source_path: Any = None,
    target_path: Any = None,
) -> dict[str, Any]:
    """The (source, target) pairs the ablations are measured on, by label.

    In the miniature world: the book's example pair (a photo), then one pair per seed whose source
    and target differ in *every* attribute (:func:`contrasting_attributes`), the targets drawn in
    the held-out styles in turn, so that leaks are visible and unseen styles are learned from one
    picture, and the sources in ``source_styles`` in turn (default: every pretraining style,
    starting after the photo), so that a verdict is not one style's. ``target_styles`` may name
    pretraining styles instead, as a control: the same method on targets whose style the base
    model already draws on any face. Labels read ``pair k (source style → target style)``. sd15
    has no ground truth to vary: its one example pair. A reader's own source or target image
    (``source_path``, ``target_path``) makes the one pair, unscored.
    """
    from ..world.attributes import PRETRAIN_STYLES, STYLES
    from .chapters import example_pair

    if source_path is not None or target_path is not None:
        return {"your pair": example_pair(backend, pipe, source_path=source_path, target_path=target_path)}
    if backend.startswith("sd15"):
        return {"pair 1": example_pair(backend, pipe)}
    if not target_styles or any(s not in STYLES for s in target_styles):
        raise ValueError(f"target_styles must name styles of the world ({', '.join(STYLES)}), "
                         f"got {list(target_styles)}")
    source_styles = PRETRAIN_STYLES if source_styles is None else tuple(source_styles)
    unknown = [s for s in source_styles if s not in PRETRAIN_STYLES]
    if not source_styles or unknown:
        raise ValueError(f"source_styles must name pretraining styles ({', '.join(PRETRAIN_STYLES)}), "
                         f"got {list(source_styles)}")
    shared = sorted(set(target_styles) & {*source_styles, BOOK_SOURCE_STYLE})
    if shared:
        raise ValueError(f"target style {', '.join(shared)} is also a source style (the book's pair has a "
                         f"{BOOK_SOURCE_STYLE} source): a pair needs a target style other than its source's; "
                         "leave it out of the targets or the sources")
    first = example_pair(backend, source_style=BOOK_SOURCE_STYLE, target_style=target_styles[0])
    pairs = {f"pair 1 ({first.source_style} → {target_styles[0]})": first}
    for k, pair_seed in enumerate(pair_seeds, start=1):
        source, target = contrasting_attributes(pair_seed)
        style, source_style = target_styles[k % len(target_styles)], source_styles[k % len(source_styles)]
        pairs[f"pair {k + 1} ({source_style} → {style})"] = example_pair(
            backend, source_attributes=source, target_attributes=target, source_style=source_style,
            target_style=style, seed=pair_seed)
    return pairs


def pair_aux(aux: Sequence[Image.Image] | Mapping[Any, Sequence[Image.Image]], pair: Any
             ) -> list[Image.Image]:
    """The auxiliary set for ``pair``: ``aux`` itself, or its entry for the pair's source style
    when ``aux`` maps source styles to sets (:func:`styo.book.auxiliary_sets`)."""
    if not isinstance(aux, Mapping):
        return list(aux)
    if pair.source_style not in aux:
        raise ValueError(f"no auxiliary set for source style {pair.source_style!r}; "
                         f"build them with styo.book.auxiliary_sets(pipe, settings, pairs.values())")
    return list(aux[pair.source_style])


def mean_rows(rows: Sequence[Mapping[str, Any]], by: Sequence[str],
              metrics: Sequence[str] = METRICS) -> list[dict[str, Any]]:
    """Rows averaged over everything but ``by`` (e.g. over pairs), in first-seen order of ``by``.

    Each output row has the ``by`` keys, the mean of each metric present, and ``n`` (rows averaged).
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for key, members in groups.items():
        mean = dict(zip(by, key, strict=True))
        for m in metrics:
            values = [r[m] for r in members if m in r]
            if values:
                mean[m] = float(np.mean(values))
        mean["n"] = len(members)
        out.append(mean)
    return out


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_cell(v, digits) for v in value) + ")"
    return str(value)


def _scalar(value: Any) -> bool:
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                 digits: int = 2) -> str:
    """A fixed-width text table of ``rows`` (default columns: every scalar key of the first row)."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = [k for k, v in rows[0].items() if _scalar(v)]
    cells = [[_cell(r.get(c, ""), digits) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, rule, *body])


def plot_bars(rows: Sequence[Mapping[str, Any]], label: str | Sequence[str],
              metrics: Sequence[str] = ("content", "style"), ax: Any = None,
              title: str | None = None) -> Any:
    """Grouped bars: one group per row (labelled by the ``label`` key(s), one line each), one bar
    per metric, the value printed on each bar; the legend sits to the right of the axes."""
    import textwrap

    import matplotlib.pyplot as plt

    keys = [label] if isinstance(label, str) else list(label)
    names = ["\n".join(textwrap.fill(_cell(r[k], 2), 14) for k in keys) for r in rows]
    if ax is None:
        width = max(4.0, 0.32 * len(rows) * len(metrics) + 0.4 * len(rows)) + 1.5
        _, ax = plt.subplots(figsize=(width, 3.0))
    step = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for j, m in enumerate(metrics):
        values = [r.get(m, np.nan) for r in rows]
        bars = ax.bar(x + (j - (len(metrics) - 1) / 2) * step, values, step, label=m)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=9)
    ax.figure.tight_layout()
    return ax


def first_images(rows: Sequence[Mapping[str, Any]], k: int = 1,
                 by_setting: bool = True) -> list[Image.Image]:
    """The first ``k`` images of every row, for a grid with :func:`styo.book.viz.show_grid`.

    ``by_setting``: row by row (a grid row per setting, ``cols=k``); otherwise image by image (a
    grid row per seed, a column per setting, ``cols=len(rows)``).
    """
    if by_setting:
        return [im for r in rows for im in r["images"][:k]]
    return [r["images"][j] for j in range(k) for r in rows]


def change(before: float, after: float, up: str = "rises", down: str = "falls",
           same: str = "stays the same", digits: int = 2) -> str:
    """The verb for a change of a score, as the numbers printed with ``digits`` decimals show it
    (so the prose never calls 0.95 → 0.95 a fall)."""
    b, a = round(before, digits), round(after, digits)
    return up if a > b else down if a < b else same


def check_claim(rows: Sequence[Mapping[str, Any]], metric: str, before: Mapping[str, Any],
                after: Mapping[str, Any], expect: str = "rises", by: str = "pair",
                digits: int = 2) -> dict[str, Any]:
    """Does ``metric`` go the ``expect`` way ("rises" or "falls") from ``before`` to ``after``?

    ``before`` and ``after`` select rows by key values (e.g. ``{"variant": "contrastive",
    "fcc": True}``); rows are matched across the two by ``by`` (e.g. the pair). Returns the means,
    ``wins`` (matched keys where the metric moved as expected, at ``digits`` decimals), ``n`` and a
    ``verdict``: "holds" (the mean moves as expected and so do most keys), "does not hold" (neither)
    or "mixed".
    """
    if expect not in ("rises", "falls"):
        raise ValueError(f"expect must be 'rises' or 'falls', got {expect!r}")

    def select(sel: Mapping[str, Any]) -> dict[Any, Mapping[str, Any]]:
        return {r[by]: r for r in rows if all(r.get(k) == v for k, v in sel.items())}

    b, a = select(before), select(after)
    keys = [k for k in b if k in a]
    if not keys:
        raise ValueError(f"no {by} has rows matching both {dict(before)} and {dict(after)}")
    wins = sum(change(b[k][metric], a[k][metric], digits=digits) == expect for k in keys)
    mean_b = float(np.mean([b[k][metric] for k in keys]))
    mean_a = float(np.mean([a[k][metric] for k in keys]))
    mean_ok = change(mean_b, mean_a, digits=digits) == expect
    most = 2 * wins > len(keys)
    verdict = "holds" if mean_ok and most else "does not hold" if not (mean_ok or most) else "mixed"
    return {"metric": metric, "before": mean_b, "after": mean_a, "wins": wins, "n": len(keys),
            "verdict": verdict}


# The paper's claims that the ablations test, as the paper states them: (claim, metric, before,
# after, expected direction). The identifier and auxiliary claims are about disentanglement, so
# they are read from the joint score (style and the source's face at once) and the target's leak,
# not from content alone, which a model that does not stylize keeps by doing nothing. Sampling is
# with FCC unless the claim is about FCC. A claim whose metric the rows lack (no segmentation
# judge: no joint score, no geometry) is skipped.
ABLATION_CLAIMS: tuple[tuple[str, str, dict[str, Any], dict[str, Any], str], ...] = (
    ("without negative identifiers the model mixes style with content: they raise the joint score "
     "(Fig. 6)", "joint",
     {"variant": "positive-only", "fcc": True}, {"variant": "contrastive", "fcc": True}, "rises"),
    ("negative identifiers stop the target's content leaking in (Fig. 6)", "leak",
     {"variant": "positive-only", "fcc": True}, {"variant": "contrastive", "fcc": True}, "falls"),
    ("the auxiliary set sharpens the split: it raises the joint score (Fig. 6)", "joint",
     {"variant": "contrastive", "fcc": True}, {"variant": FULL_IDL, "fcc": True}, "rises"),
    ("the auxiliary set keeps more of the source's detail (Fig. 6)", "content",
     {"variant": "contrastive", "fcc": True}, {"variant": FULL_IDL, "fcc": True}, "rises"),
    ("FCC keeps more of the source's face (Fig. 5)", "content",
     {"variant": FULL_IDL, "fcc": False}, {"variant": FULL_IDL, "fcc": True}, "rises"),
    ("FCC keeps the source's geometry: its head where the source has it (Fig. 5)", "geometry",
     {"variant": FULL_IDL, "fcc": False}, {"variant": FULL_IDL, "fcc": True}, "rises"),
    ("FCC costs diversity (Fig. 5)", "diversity",
     {"variant": FULL_IDL, "fcc": False}, {"variant": FULL_IDL, "fcc": True}, "falls"),
)


def check_ablation_claims(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """:func:`check_claim` for each of :data:`ABLATION_CLAIMS` whose variants ``rows`` hold.

    Each result also carries the claim's ``text``, the ``digits`` its metric is compared at
    (diversity is small, so three) and ``style``: what the same change did to the target style.
    """
    variants = {r["variant"] for r in rows}
    out = []
    for text, metric, before, after, expect in ABLATION_CLAIMS:
        if not {before["variant"], after["variant"]} <= variants or any(metric not in r for r in rows):
            continue
        digits = 3 if metric == "diversity" else 2
        result = check_claim(rows, metric, before, after, expect, digits=digits)
        out.append({**result, "text": text, "digits": digits,
                    "style": check_claim(rows, "style", before, after)})
    return out


def claims_markdown(claims: Sequence[Mapping[str, Any]]) -> str:
    """One bullet per checked claim: verdict, the means and in how many pairs it went that way."""
    lines = []
    for c in claims:
        d, s = c["digits"], c["style"]
        lines.append(f"- *{c['text']}*: **{c['verdict']}**. Mean {c['metric']} {c['before']:.{d}f} → "
                     f"{c['after']:.{d}f}, as claimed in {c['wins']} of {c['n']} pairs "
                     f"(target style meanwhile {s['before']:.2f} → {s['after']:.2f}).")
    return "\n".join(lines)


# --- What the chapters say about their measurements --------------------------------------------
# A chapter's prose states a verdict that depends on the numbers of that run (CI's small settings,
# the book's full ones, or a reader's own images), so the sentences are computed, and written once
# here so that each chapter cell shows the measurement and not the wording machinery.


def pair_grid(pairs: Mapping[str, Any], images: Mapping[str, Sequence[Image.Image]],
              titles: Sequence[str], heads: Sequence[str] = ("source", "target"),
              size: float = 1.6) -> Any:
    """One row per pair: its source, its target, then its pictures (``images[label]``), with the
    column titles on the first row only; several pairs read side by side, as the paper shows them."""
    from .viz import show_grid

    labels = list(pairs)
    panels = [im for label in labels for im in (pairs[label].source, pairs[label].target, *images[label])]
    cols = 2 + len(images[labels[0]])
    names = [*heads, *titles] + [""] * cols * (len(labels) - 1)
    return show_grid(panels, names, cols=cols, size=size, row_labels=labels)


def window_verdict(by_window: Sequence[Mapping[str, Any]]) -> str:
    """Which FCC step window keeps the most content and which stylizes most (the first row is
    "no control"), and whether one window wins both or they trade off."""
    best_c = max(by_window, key=lambda r: r["content"])
    best_s = max(by_window[1:], key=lambda r: r["style"])
    spread = max(r["content"] for r in by_window) - min(r["content"] for r in by_window)
    if spread < 0.005:
        return "The judges see no difference in content between the windows."
    return (f"The most content is kept with window {best_c['control_steps']} "
            f"({best_c['content']:.2f}, against {by_window[0]['content']:.2f} without control); "
            f"among controlled windows the target style is strongest with "
            f"{best_s['control_steps']} ({best_s['style']:.2f})."
            + (" The same window wins both." if best_c is best_s
               else " Content and style pull in different directions: a trade-off."))


def plot_by_strength(depth: Sequence[Mapping[str, Any]],
                     metrics: Sequence[str] = ("content", "leak", "style")) -> Any:
    """One panel per metric against the diffusion depth, with and without FCC (rows carry ``fcc``
    and ``strength``): whether FCC's effect depends on how much of the source survives the noise."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(10, 2.8), sharex=True)
    for ax, metric in zip(axes, metrics, strict=True):
        for f, style in ((False, "o--"), (True, "o-")):
            rows = [r for r in depth if r["fcc"] == f]
            ax.plot([r["strength"] for r in rows], [r[metric] for r in rows], style,
                    label="with FCC" if f else "without FCC")
        ax.set(title=metric, xlabel="strength", ylim=(-0.05, 1.05))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def depth_verdict(depth: Sequence[Mapping[str, Any]], strengths: Sequence[float]) -> str:
    """FCC's gain in content per strength (rows: every strength without FCC, then with it) and
    where it is largest."""
    gain = [r_on["content"] - r_off["content"] for r_off, r_on in
            zip(depth[:len(strengths)], depth[len(strengths):], strict=True)]
    top = max(range(len(gain)), key=gain.__getitem__)
    return ("FCC's gain in content fidelity per strength: "
            + ", ".join(f"{s}: {g:+.2f}" for s, g in zip(strengths, gain, strict=True))
            + (f". It is largest at strength {strengths[top]}." if gain[top] >= 0.005
               else ". FCC gains nothing at any depth in this run."))


def sharpness_markdown(sharp: Mapping[str, float], gain: float | None, n_s: int) -> str:
    """What the flatness of the maps (:func:`styo.sharpness.attention_sharpness`) predicts for FCC,
    read together with FCC's measured content ``gain`` (None when nothing was measured): FCC copies
    maps, so it can carry a layout only where the maps are peaked."""
    flat = sharp["entropy"] > 0.9
    summary = (f"This model's cross-attention is **{'nearly uniform' if flat else 'peaked'}**: entropy "
               f"{sharp['entropy']:.2f} of the maximum, the largest probability {sharp['max_prob']:.3f}, "
               f"{sharp['padding_mass']:.0%} of the attention on the padding. ")
    if not flat:
        why = "The maps pick out a few tokens per pixel, so FCC has a layout to hand over"
        if gain is None:
            why += "."
        elif gain >= 0.1:
            why += f", and it did: content fidelity rose by {gain:+.2f} above."
        else:
            why += (f"; yet content fidelity changed by only {gain:+.2f} above, so the copied layout alone "
                    "did not bring the source's attributes back.")
    elif gain is not None and gain >= 0.1:
        why = (f"Yet FCC raised content fidelity by {gain:+.2f} above. With maps this even, what the copied "
               "columns carry is less *where* than *how much*: the share of attention the reconstruction "
               "branch gives the content words, which the stylization prompt, its style phrase repeated "
               f"n_s = {n_s} times, has diluted. That is our reading, and two measurements support it: "
               "`benchmarks/fcc_probe.py` found FCC changing nothing with n_s = 1 on this model, and chapter 8 "
               "sweeps n_s. Chapter 10 says why the miniature model's maps are flat; the `sd15` backend runs "
               "this chapter where they are not.")
    else:
        why = ("Each pixel reads an average of the prompt, so the maps carry little layout for FCC to "
               "copy, and the content travels in the values, which FCC leaves alone: a small effect of "
               "FCC above is what this predicts. `benchmarks/fcc_probe.py` probes further (it transplants "
               "*every* token's map, the strongest attention control there is); chapter 10 says why the "
               "miniature model's maps are flat, and the `sd15` backend runs this chapter where they are not.")
    return summary + why


def plain_prompt_verdict(d_off: float, d_on: float) -> str:
    """Whether FCC mostly undoes the style phrase's repetition: the augmented prompt's pictures'
    distance to the plain prompt's, without FCC (``d_off``) and with it (``d_on``)."""
    return (f"Without FCC the augmented prompt's pictures lie {d_off:.3f} from the plain prompt's; with FCC "
            f"{d_on:.3f}. "
            + ("FCC mostly undoes the repetition of the style phrase: its pictures come back close to the "
               "plain prompt's, so at least part of its gain in content above is the content the repetition "
               "had cost." if d_on < d_off / 2 else
               "FCC does more than undo the repetition of the style phrase: its pictures are not simply the "
               "plain prompt's."))


def encodings_verdict(off: Mapping[str, Any], on: Mapping[str, Any], copied: Mapping[str, Any]) -> str:
    """What copying the content words' text encodings adds to FCC on one pair (rows without FCC,
    with FCC, and with FCC plus the copied encodings): the content, the leak and the style, and
    the reading the numbers support."""
    content, style = change(on["content"], copied["content"]), change(on["style"], copied["style"])
    text = (f"With the reconstruction's encodings of the content words as well as their maps, content "
            f"fidelity **{content}** ({on['content']:.2f} → {copied['content']:.2f}; without FCC "
            f"{off['content']:.2f}), the target's leak {change(on['leak'], copied['leak'])} "
            f"({on['leak']:.2f} → {copied['leak']:.2f}) and the target style's probability **{style}** "
            f"({on['style']:.2f} → {copied['style']:.2f}). ")
    if content != "rises":
        return text + ("On this pair what the content words say was not what kept the source's face "
                       "away.")
    if style == "falls":
        share = "most" if copied["style"] < on["style"] / 2 else "part"
        return text + ("So the content words did carry some of the target: the causal text encoder had "
                       "written the target's style phrase into them, the target's face with it where the "
                       f"face rides on the style identifiers, and {share} of the style goes when they are "
                       "given back the source's encodings.")
    return text + "On this pair the source's face comes back at no cost in style."


def trend(rows: Sequence[Mapping[str, Any]], metric: str, knob: str, values: Sequence[Any]) -> list[float]:
    """Mean of ``metric`` at each value of ``knob``, averaged over the other knobs of the grid."""
    return [float(np.mean([r[metric] for r in rows if r[knob] == v])) for v in values]


def repetition_claims(grid: Sequence[Mapping[str, Any]], n_s_values: Sequence[int],
                      n_c_values: Sequence[int]) -> str:
    """The paper's two claims about the augmented prompt checked on an n_s × n_c grid, each
    averaged over the other knob (larger n_s stylizes more, larger n_c keeps more of the source),
    and whether stylizing harder costs content; one bullet each."""
    claims = []
    for metric, knob, values, claim in (("style", "n_s", n_s_values, "a larger n_s stylizes more"),
                                         ("content", "n_c", n_c_values, "a larger n_c keeps more of the source")):
        means = trend(grid, metric, knob, values)
        holds = change(means[0], means[-1]) == "rises"
        monotone = all(round(b, 2) >= round(a, 2) for a, b in zip(means, means[1:], strict=False))
        claims.append(
            f"- *{claim}*: **{'holds' if holds else 'does not hold'}** here. Mean {metric} by {knob}: "
            + ", ".join(f"{v}: {m:.2f}" for v, m in zip(values, means, strict=True))
            + (" (not monotone)" if holds and not monotone else "") + ".")
    cost = trend(grid, "content", "n_s", n_s_values)
    claims.append(f"- Stylizing harder **{'costs' if change(cost[0], cost[-1]) == 'falls' else 'does not cost'}** "
                  "content: mean content by n_s " + ", ".join(f"{v}: {m:.2f}" for v, m in zip(n_s_values, cost, strict=True)) + ".")
    return "\n".join(claims)


def grid_study_markdown(record: Mapping[str, Any]) -> str:
    """A larger study's n_s × n_c grid (``benchmarks/ablations.py --grid-pairs N``): its means over
    the pairs and the augmented prompt's claims read from them, as :func:`repetition_claims` reads
    one pair's grid in chapter 8."""
    from .results import STUDY_SCORES, markdown_table

    means = record["grid_means"]
    n_s_values = sorted({m["n_s"] for m in means})
    n_c_values = sorted({m["n_c"] for m in means})
    scores = [k for k in STUDY_SCORES if k in means[0]]
    return "\n".join([
        f"The augmented prompt's n_s × n_c grid on the full variant's runs of "
        f"{len({r['pair'] for r in record['grid']})} pairs (mean over pairs):", "",
        markdown_table(means, ["n_s", "n_c", *scores], decimals=2), "",
        repetition_claims(means, n_s_values, n_c_values),
        *([grid_bound_markdown(record["grid"], means)] if "joint" in means[0] else [])])


def best_cells(grid: Sequence[Mapping[str, Any]], metric: str = "joint") -> dict[Any, Mapping[str, Any]]:
    """Each pair's row of the grid with the highest ``metric`` (the first such cell on a tie)."""
    best: dict[Any, Mapping[str, Any]] = {}
    for row in grid:
        if row["pair"] not in best or row[metric] > best[row["pair"]][metric]:
            best[row["pair"]] = row
    return best


def grid_bound_markdown(grid: Sequence[Mapping[str, Any]], means: Sequence[Mapping[str, Any]]) -> str:
    """How far the augmented prompt could lift the joint score at best: the grid's best cell for
    all pairs, and each pair's own best cell chosen after the fact. The second is a bound, not a
    setting: it lets the judges pick per pair, which a user stylizing a new pair cannot."""
    top = max(means, key=lambda m: m["joint"])
    best = best_cells(grid)
    bound = float(np.mean([r["joint"] for r in best.values()]))
    none = [p for p, r in best.items() if r["joint"] == 0]
    nowhere = f", and in {len(none)} of {len(best)} pairs no picture passes in any cell" if none else ""
    return (f"- At best: the grid's best cell for every pair (n_s = {top['n_s']}, n_c = {top['n_c']}) reads "
            f"joint {top['joint']:.2f}; each pair's own best cell, chosen after the fact by the judges, "
            f"reads {bound:.2f}{nowhere}.")


def augmentation_markdown(inference: Sequence[Mapping[str, Any]],
                          training: Sequence[Mapping[str, Any]]) -> str:
    """For each (n_s, n_c): what training with the augmented prompts changed against only sampling
    with them (rows matched by position), in style, content and the third-style share."""
    lines = []
    for inf, trn in zip(inference, training, strict=True):
        lines.append(
            f"- ({inf['n_s']}, {inf['n_c']}), trained with the augmented prompts instead of only "
            f"sampled with them: the target style's probability **{change(inf['style'], trn['style'])}** "
            f"({inf['style']:.2f} → {trn['style']:.2f}), content fidelity "
            f"**{change(inf['content'], trn['content'])}** ({inf['content']:.2f} → {trn['content']:.2f}), "
            f"the third-style share **{change(inf['other_style'], trn['other_style'])}** "
            f"({inf['other_style']:.2f} → {trn['other_style']:.2f}).")
    return "\n".join(lines)


def study_markdown_sections(study: Mapping[str, Any]) -> list[str]:
    """A larger ablation study (``benchmarks/ablations.py``) as Markdown sections, in the order both
    its results file and the ablation chapter show them: the means, the claims, then each part the
    run measured (targets, the scale line, the grid, the strengths, the extensions, the crossing)."""
    from .results import (
        ablation_means_markdown,
        content_encodings_markdown,
        crossing_study_markdown,
        ideal_markdown,
        self_attention_markdown,
        strength_sweep_markdown,
        strengths_markdown,
        study_targets_markdown,
    )

    parts = {
        "targets": lambda s: study_targets_markdown(
            s["targets"], rows=full_method(s.get("rows", ()))),
        "ideal": lambda s: ideal_markdown(s["ideal"]),
        "grid_means": grid_study_markdown,
        "strength_sweep": lambda s: strength_sweep_markdown(s["strength_sweep"]),
        "strengths": lambda s: strengths_markdown(s["strengths"]),
        "self_attention": lambda s: self_attention_markdown(s["self_attention"]),
        "content_encodings": lambda s: content_encodings_markdown(s["content_encodings"]),
        "crossing": crossing_study_markdown,
    }
    return [ablation_means_markdown(study["means"]), claims_markdown(study["claims"]),
            *(render(study) for key, render in parts.items() if study.get(key))]


def recorded_moves(by_seed: Mapping[int, tuple[str, str]], scores: Sequence[str] = ("joint", "style", "content"),
                   results_dir: Any = None) -> tuple[list[str], dict[str, str | None]]:
    """How the full method with FCC moved from one recorded study to another, once per IDL seed.

    ``by_seed`` maps a seed to the names (``benchmarks/ablations.py --name``) of its study before and
    after a change of setting. Returns a line per seed (each score, before → after) and each
    score's verb (:func:`change`) where every seed agrees, else None: one seed's move is the draw's
    as much as the setting's (chapter 9 measures how much).
    """
    from .results import RESULTS, ablation_study

    lines, verbs = [], {k: set() for k in scores}
    for seed, names in by_seed.items():
        studies = [ablation_study(results_dir or RESULTS, name) for name in names]
        before, after = (full_method(s["means"])[0] for s in studies)
        lines.append(f"IDL seed {seed} ({studies[0]['model']}): "
                     + ", ".join(f"{k} {before[k]:.2f} → {after[k]:.2f}" for k in scores))
        for k in scores:
            verbs[k].add(change(before[k], after[k]))
    return lines, {k: v.pop() if len(v) == 1 else None for k, v in verbs.items()}


def recorded_study_markdown(study: Mapping[str, Any] | None, fingerprint: str, strength: float,
                            guidance: float | None = None) -> str:
    """The committed larger ablation study (``benchmarks/ablations.py``), or why it does not apply
    to this page: none recorded, another model, another strength or another guidance (its numbers
    would then say nothing about what the page just measured)."""
    if study is None:
        return "No larger study is recorded yet: `python benchmarks/ablations.py` makes one."
    if study["model_fingerprint"] != fingerprint:
        return (f"The recorded study ({study['date']}, `{study['model']}`) measured another model; "
                "its numbers would say nothing about this one.")
    if study.get("stylization", {}).get("strength") != strength:
        return (f"The recorded study ({study['date']}) stylized at another strength "
                f"({study.get('stylization', {}).get('strength', 'not recorded')}, this page {strength}): "
                "`python benchmarks/ablations.py` measures it again.")
    recorded_guidance = study.get("stylization", {}).get("guidance")
    if guidance is not None and recorded_guidance is not None and recorded_guidance != guidance:
        return (f"The recorded study ({study['date']}) sampled at another guidance ({recorded_guidance:g}, "
                f"this page {guidance:g}): `python benchmarks/ablations.py --guidance {guidance:g}` "
                "measures it again.")
    return (f"{len(study['pairs'])} pairs, IDL {study['idl']['steps']} steps, {study['n_images']} images "
            f"per setting, measured {study['date']} in {study['seconds'] / 60:.0f} min:\n\n"
            + "\n\n".join(study_markdown_sections(study)))


__all__ = [
    "ABLATION_CLAIMS", "FULL_IDL", "IDEAL_SCORES", "IDL_VARIANTS", "METRICS", "SHARED_SELF_ATTENTION", "ablation_pairs",
    "ablation_rows", "ablation_seeds", "augmentation_markdown",
    "base_weights", "best_cells", "change", "check_ablation_claims", "check_claim", "claims_markdown",
    "contrasting_attributes", "depth_verdict",
    "diversity", "encodings_verdict", "first_images", "follow_markdown", "format_table", "grid_bound_markdown", "grid_study_markdown", "head_follow", "ideal_rows", "mean_rows", "pair_aux",
    "pair_grid",
    "plain_prompt_verdict", "plot_bars", "plot_by_strength", "recorded_moves", "recorded_study_markdown",
    "repetition_claims", "restore_weights", "score", "score_pair", "sharpness_markdown",
    "snapshot_weights", "study_markdown_sections", "stylize_rows", "trend", "window_verdict",
]
