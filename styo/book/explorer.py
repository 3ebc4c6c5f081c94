"""Attention explorers: a static figure, a browser-only widget for the book, a live widget.

Three ways to look at the cross-attention maps an :class:`~styo.attention.AttentionRecorder`
collected during :func:`styo.fcc.stylize`:

* :func:`word_maps_figure` — a matplotlib figure, the image and one heat-map panel per word. It is
  what a reader sees in the rendered book with JavaScript off, and in a PDF.
* :func:`static_explorer` — an ipywidgets explorer **without Python callbacks**, for the rendered
  (static HTML) book. Every view is precomputed as a PNG in an ``ipywidgets.Image``; nested
  ``ipywidgets.Stack`` containers hold them (word → resolution → opacity → step bucket) and the
  controls' ``index`` traits are ``jslink``-ed to the stacks' ``selected_index``, so the browser
  switches views on its own once the notebook's widget state is embedded in the page.
* :func:`live_explorer` — the richer explorer for a live kernel (Jupyter, Colab): any word, any
  single layer or resolution, any step range, any opacity, either branch, redrawn by ``observe``
  callbacks. In the rendered book it would show one frozen view with dead controls, so chapters
  show it in a live session only.

There is deliberately no ``explore()`` that picks one of the two: a notebook executed for the
book runs in a real kernel too, so "is a kernel there" does not tell the cases apart. Chapters
call :func:`static_explorer` for the book and :func:`live_explorer` explicitly for live sessions.

**Bound of the static explorer.** It stores ``words × resolutions × alphas × step buckets`` PNGs:
resolutions are "all layers" plus each recorded latent side (individual layers are left to the
live explorer), step buckets at most ``max_step_buckets`` (default 6) groups of consecutive
recorded steps, opacities a fixed small set (default three). The PNGs are rendered at the
image's own size clamped to ``png_size`` (default 64 px side at most, shown at ``display_px``
= 192 px by the browser) and palette-quantised, about 3-6 kB each; ``max_images`` (default 300)
refuses anything larger with a message saying what to cut.

**Widget state in the book.** The page carries the widgets only if the executed notebook saved
their state: nbclient's ``NotebookClient(store_widget_state=True)`` (its default) writes
``metadata.widgets["application/vnd.jupyter.widget-state+json"]``; papermill and myst-nb's
inline executor call ``set_widgets_metadata()`` after running, so both keep it by default.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as W
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import PIL.Image

from ..attention import AttentionRecorder
from .viz import plot_word_maps

ALL_LAYERS = "all layers"


# ----------------------------------------------------------------------------- images


def overlay(
    image: PIL.Image.Image,
    heat: np.ndarray,
    alpha: float = 0.6,
    cmap: str = "jet",
    *,
    grey: bool = False,
) -> PIL.Image.Image:
    """``image`` blended with ``heat`` (values in [0, 1], any size) coloured by ``cmap``.

    The heat map is resized bilinearly to the image; ``alpha`` is the heat map's opacity, so
    ``alpha=0`` gives the image back unchanged (RGB). ``grey=True`` blends over a grey copy,
    which keeps the face readable under a colourful map (as :func:`styo.book.viz.plot_word_maps`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map, got shape {heat.shape}")
    base = image.convert("L").convert("RGB") if grey else image.convert("RGB")
    if alpha == 0.0:
        return base
    resized = PIL.Image.fromarray(np.clip(heat, 0.0, 1.0), mode="F").resize(
        base.size, PIL.Image.BILINEAR
    )
    rgba = matplotlib.colormaps[cmap](np.clip(np.asarray(resized), 0.0, 1.0))
    coloured = PIL.Image.fromarray((rgba[..., :3] * 255 + 0.5).astype(np.uint8), mode="RGB")
    return PIL.Image.blend(base, coloured, alpha)


def png_bytes(image: PIL.Image.Image, colors: int | None = None) -> bytes:
    """PNG encoding of ``image``; ``colors`` palette-quantises it first (smaller pages)."""
    if colors is not None:
        image = image.convert("RGB").quantize(colors=colors, method=PIL.Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------- figure


def word_maps_figure(
    recorder: AttentionRecorder,
    image: PIL.Image.Image,
    words: Sequence[str],
    *,
    resolution: int | None = None,
    steps: Sequence[int] | None = None,
    branch: str = "sty",
    image_index: int = 0,
    alpha: float = 0.6,
    cmap: str = "jet",
    title: str | None = None,
    **kwargs: Any,
) -> plt.Figure:
    """The image and one heat map per word (the word as title), averaged over layers and steps.

    ``resolution`` keeps the layers at that latent side (``None``: all recorded layers);
    ``steps`` the denoising step indices (``None``: all recorded). Extra keyword arguments go to
    :func:`styo.book.viz.plot_word_maps` (``cols``, ``size``).
    """
    maps = recorder.aggregate(
        [words] if isinstance(words, str) else list(words), resolution, steps=steps, branch=branch, image=image_index,
        image_size=image.size[::-1],
    )
    if title is None:
        where = ALL_LAYERS if resolution is None else f"{resolution}² layers"
        when = "all steps" if steps is None else _steps_label(sorted(steps))
        title = f"{branch} branch cross-attention · {where} · {when}"
    return plot_word_maps(image, maps, alpha=alpha, cmap=cmap, title=title, **kwargs)


# ----------------------------------------------------------------------------- helpers


def _steps_label(steps: Sequence[int]) -> str:
    """1-based, human-readable label of a run of step indices."""
    if not steps:
        return "no steps"
    lo, hi = steps[0] + 1, steps[-1] + 1
    return f"step {lo}" if lo == hi else f"steps {lo}–{hi}"


def step_buckets(
    steps: Sequence[int], max_buckets: int, cumulative: bool = False
) -> list[list[int]]:
    """Split sorted ``steps`` into at most ``max_buckets`` runs of consecutive entries.

    ``cumulative=True`` makes bucket ``k`` hold every step up to the end of run ``k`` (the last
    bucket is then the average over all steps).
    """
    steps = sorted(steps)
    if max_buckets < 1:
        raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
    n = min(max_buckets, len(steps))
    edges = [k * len(steps) // n for k in range(n + 1)]
    runs = [steps[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    if cumulative:
        return [steps[: edges[k + 1]] for k in range(n)]
    return runs


def _resolutions(recorder: AttentionRecorder) -> list[int]:
    return sorted({max(s) for s in recorder.sizes.values()}, reverse=True)


def _underlays(
    image: PIL.Image.Image | Mapping[str, PIL.Image.Image], branches: Sequence[str]
) -> dict[str, PIL.Image.Image]:
    """Per-branch underlay: one image for all branches, or ``{"rec": ..., "sty": ...}``."""
    if isinstance(image, Mapping):
        missing = [b for b in branches if b not in image]
        if missing:
            raise KeyError(f"no image for branch(es) {missing}; got {sorted(image)}")
        return {b: image[b] for b in branches}
    return {b: image for b in branches}


def _png_image(
    img: PIL.Image.Image, display_px: int, colors: int | None, layout: W.Layout | None = None
) -> W.Image:
    return W.Image(value=png_bytes(img, colors), format="png", width=str(display_px),
                   height=str(display_px * img.size[1] // img.size[0]),
                   **({} if layout is None else {"layout": layout}))


def _small(img: PIL.Image.Image, png_size: int | None) -> PIL.Image.Image:
    """The image shrunk so that its longer side is at most ``png_size`` (never enlarged)."""
    if png_size is None or max(img.size) <= png_size:
        return img
    scale = png_size / max(img.size)
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    return img.resize(size, PIL.Image.LANCZOS)


def _stack(children: Sequence[W.Widget], layout: W.Layout | None = None) -> W.Stack:
    return W.Stack(children=list(children), selected_index=0,
                   **({} if layout is None else {"layout": layout}))


# ----------------------------------------------------------------------------- static explorer


def static_explorer(
    recorder: AttentionRecorder,
    image: PIL.Image.Image | Mapping[str, PIL.Image.Image],
    words: Sequence[str],
    *,
    resolutions: Sequence[int | None] | None = None,
    steps: Sequence[int] | None = None,
    branch: str = "sty",
    alphas: Sequence[float] = (0.3, 0.6, 0.9),
    max_step_buckets: int = 6,
    cumulative: bool = False,
    image_index: int = 0,
    cmap: str = "jet",
    grey: bool = True,
    png_size: int | None = 64,
    display_px: int = 192,
    colors: int | None = 128,
    max_images: int = 300,
) -> W.VBox:
    """An explorer that works in static HTML: precomputed PNGs switched by ``jslink``-ed controls.

    Controls: word (``ToggleButtons``), layers (``Dropdown``: all layers or one latent
    resolution; ``None`` in ``resolutions`` means all layers, the default is all layers plus each
    recorded resolution), denoising steps (``SelectionSlider`` over at most ``max_step_buckets``
    buckets of the recorded ``steps``; ``cumulative=True`` averages from the first step up to the
    bucket) and overlay opacity (``ToggleButtons`` over ``alphas``). Each control's ``index`` is
    linked in the browser to the ``selected_index`` of every ``Stack`` at its level:
    ``words × resolutions × alphas × buckets`` images, refused above ``max_images``.

    The returned ``VBox`` has the attributes ``controls`` (dict name -> control), ``stacks``
    (dict level -> list of Stacks), ``links`` (the ``jslink`` Link widgets) and ``images``
    (dict (word, resolution, alpha, bucket) -> ``ipywidgets.Image``) for inspection and tests.
    """
    words = [words] if isinstance(words, str) else list(dict.fromkeys(words))
    if not words:
        raise ValueError("static_explorer needs at least one word")
    if not alphas:
        raise ValueError("static_explorer needs at least one opacity in alphas")
    underlay = _underlays(image, [branch])[branch]
    small = _small(underlay, png_size)
    recorded = recorder.recorded_steps if steps is None else sorted(steps)
    buckets = step_buckets(recorded, max_step_buckets, cumulative)
    res_options: list[int | None] = (
        [None, *_resolutions(recorder)] if resolutions is None else list(resolutions)
    )
    count = len(words) * len(res_options) * len(alphas) * len(buckets)
    if count > max_images:
        raise ValueError(
            f"{len(words)} words × {len(res_options)} resolutions × {len(alphas)} opacities × "
            f"{len(buckets)} step buckets = {count} images > max_images={max_images}; pass fewer "
            f"words, resolutions or alphas, a smaller max_step_buckets, or raise max_images"
        )

    # One Layout model shared by all precomputed views halves the number of models in the
    # notebook's widget state (every widget would otherwise carry its own Layout).
    shared = W.Layout()
    images: dict[tuple[str, int | None, float, int], W.Image] = {}
    for r in res_options:
        for k, bucket in enumerate(buckets):
            maps = recorder.aggregate(
                words, r, steps=bucket, branch=branch, image=image_index,
                image_size=small.size[::-1],
            )
            for word in words:
                for a in alphas:
                    view = overlay(small, maps[word], a, cmap, grey=grey)
                    images[word, r, a, k] = _png_image(view, display_px, colors, shared)

    stacks: dict[str, list[W.Stack]] = {"word": [], "resolution": [], "alpha": [], "step": []}

    def level_step(word: str, r: int | None, a: float) -> W.Stack:
        s = _stack([images[word, r, a, k] for k in range(len(buckets))], shared)
        stacks["step"].append(s)
        return s

    def level_alpha(word: str, r: int | None) -> W.Stack:
        s = _stack([level_step(word, r, a) for a in alphas], shared)
        stacks["alpha"].append(s)
        return s

    def level_res(word: str) -> W.Stack:
        s = _stack([level_alpha(word, r) for r in res_options], shared)
        stacks["resolution"].append(s)
        return s

    top = _stack([level_res(word) for word in words], shared)
    stacks["word"].append(top)

    style = {"description_width": "initial"}
    controls = {
        "word": W.ToggleButtons(options=words, index=0, description="word", style=style),
        "resolution": W.Dropdown(
            options=[ALL_LAYERS if r is None else f"{r}×{r} layers" for r in res_options],
            index=0, description="layers", style=style,
        ),
        "step": W.SelectionSlider(
            options=[_steps_label(b) for b in buckets],
            index=0, description="denoising", style=style, continuous_update=True,
            layout=W.Layout(width="420px"),
        ),
        "alpha": W.ToggleButtons(
            options=[f"{a:.0%}" for a in alphas], index=min(1, len(alphas) - 1),
            description="opacity", style=style,
        ),
    }
    for s in stacks["alpha"]:  # the Python-side state matches the controls' initial values
        s.selected_index = controls["alpha"].index
    links = [
        W.jslink((controls[level], "index"), (s, "selected_index"))
        for level in ("word", "resolution", "alpha", "step")
        for s in stacks[level]
    ]
    original = _png_image(small, display_px, colors)
    caption = W.HTML(
        f"<small>{branch} branch · {len(recorded)} recorded steps in {len(buckets)} buckets · "
        f"each map scaled to its own maximum</small>"
    )
    box = W.VBox([
        controls["word"],
        W.HBox([controls["resolution"], controls["alpha"]]),
        controls["step"],
        W.HBox([W.VBox([W.HTML("<b>image</b>"), original]),
                W.VBox([W.HTML("<b>attention</b>"), top])]),
        caption,
    ])
    box.controls, box.stacks, box.links, box.images = controls, stacks, links, images
    return box


# ----------------------------------------------------------------------------- live explorer


def _layer_options(recorder: AttentionRecorder) -> list[tuple[str, tuple[int | None, str | None]]]:
    """Dropdown entries: all layers, each resolution, then each single layer."""
    opts: list[tuple[str, tuple[int | None, str | None]]] = [(ALL_LAYERS, (None, None))]
    for r in _resolutions(recorder):
        opts.append((f"{r}×{r} layers ({len(recorder.layers(r))})", (r, None)))
    for name in recorder.layers():
        h, w = recorder.sizes[name]
        opts.append((f"{name} ({h}×{w})", (None, name)))
    return opts


def live_explorer(
    recorder: AttentionRecorder,
    image: PIL.Image.Image | Mapping[str, PIL.Image.Image],
    words: Sequence[str],
    *,
    branch: str = "sty",
    alpha: float = 0.6,
    image_index: int = 0,
    cmap: str = "jet",
    grey: bool = True,
    display_px: int = 256,
) -> W.VBox:
    """An explorer redrawn by Python callbacks, for a live kernel (Jupyter, Colab).

    Controls: word (``Dropdown``), layers (all, one resolution, or any single layer), step range
    (``IntRangeSlider`` over recorded step indices, 1-based labels), opacity (``FloatSlider``)
    and branch (``ToggleButtons``: the recorder's branches). ``image`` is the underlay, or
    ``{"rec": reconstruction, "sty": stylized}`` to follow the branch. A word missing from the
    chosen branch's prompt shows a message instead of a map.

    The returned ``VBox`` has ``controls`` (dict), ``view`` (the ``ipywidgets.Image`` that is
    redrawn), ``message`` (an ``HTML``) and ``redraw()``.
    """
    words = [words] if isinstance(words, str) else list(words)
    if not words:
        raise ValueError("live_explorer needs at least one word")
    branches = list(recorder.branches)
    if branch not in branches:
        raise ValueError(f"branch {branch!r} was not recorded; recorded: {branches}")
    underlays = _underlays(image, branches)
    steps = recorder.recorded_steps
    if not steps:
        raise ValueError("the recorder holds no maps: run stylize(..., record=True) first")
    style = {"description_width": "initial"}
    controls = {
        "word": W.Dropdown(options=words, value=words[0], description="word", style=style),
        "layers": W.Dropdown(options=_layer_options(recorder), index=0, description="layers",
                             style=style, layout=W.Layout(width="420px")),
        "steps": W.IntRangeSlider(value=(steps[0] + 1, steps[-1] + 1), min=steps[0] + 1,
                                  max=steps[-1] + 1, step=1, description="steps (1-based)",
                                  style=style, continuous_update=False,
                                  layout=W.Layout(width="420px")),
        "alpha": W.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="opacity",
                               style=style, continuous_update=False),
        "branch": W.ToggleButtons(options=branches, value=branch, description="branch",
                                  style=style),
    }
    view = W.Image(format="png", width=str(display_px))
    original = W.Image(format="png", width=str(display_px))
    message = W.HTML()

    def redraw(_: Any = None) -> None:
        b = controls["branch"].value
        base = underlays[b]
        original.value = png_bytes(base)
        resolution, layer = controls["layers"].value
        lo, hi = controls["steps"].value
        chosen = [s for s in steps if lo - 1 <= s <= hi - 1]
        word = controls["word"].value
        try:
            heat = recorder.aggregate(
                [word], resolution, steps=chosen, layers=None if layer is None else [layer],
                branch=b, image=image_index, image_size=base.size[::-1],
            )[word]
        except (KeyError, ValueError) as err:
            message.value = f"<span style='color:#a33'>{err}</span>"
            view.value = png_bytes(base.convert("L").convert("RGB") if grey else base)
            return
        message.value = (f"<small>{b} branch · <b>{word}</b> · {controls['layers'].label} · "
                         f"{_steps_label(chosen)} · map scaled to its maximum</small>")
        view.value = png_bytes(overlay(base, heat, controls["alpha"].value, cmap, grey=grey))

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    box = W.VBox([
        W.HBox([controls["word"], controls["branch"]]),
        controls["layers"],
        controls["steps"],
        controls["alpha"],
        W.HBox([original, view]),
        message,
    ])
    box.controls, box.view, box.message, box.redraw = controls, view, message, redraw
    return box
