"""Small measurements and figures the book's chapters show about a pipeline and its attention.

* :func:`cross_attention_layers` — every cross-attention layer of a UNet in forward order, with
  the latent resolution it works at (found by running the UNet once, not by parsing names).
* :func:`layer_label` — a short name for a layer (``down0.0 16×16``) for figure titles.
* :func:`map_grid` — words × views of an :class:`~styo.attention.AttentionRecorder`, where a view
  is a selection of layers, resolution and steps (the chapter's "per layer / per step / per
  resolution" figures are all this one picture).
* :func:`concentration` — how peaked a word's attention is, per denoising step: the share of its
  attention mass that falls in its top fraction of pixels (``top`` for an even spread, 1 for all
  mass in that fraction).
* :func:`describe_pipeline`, :func:`latent_channel_image`, :func:`plot_layer_sides`,
  :func:`plot_noise_schedule`, :func:`pixel_spread` — the base-model chapter's tour of a
  pipeline's parts.
* :func:`grounding_figure`, :func:`grounding_summary`, :func:`training_runs` — the miniature
  world's chapter: one picture with each region word's heat map by DAAM's protocol over the region
  the segmentation judge finds; the base model's recorded word-map figures; its training runs.
* :func:`identifier_grid`, :func:`plot_idl_losses` — the IDL chapter's view of what the four
  identifiers mean before and after training (chapter 9 measures it: :mod:`styo.book.crossing`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import torch

from ..attention import AttentionRecorder
from .explorer import overlay


@dataclass(frozen=True)
class CrossAttentionLayer:
    """One ``attn2`` module: where it sits, what it attends from and to."""

    name: str  # module name in the UNet, e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn2
    size: tuple[int, int]  # latent side (h, w) of its queries: one query per latent pixel
    heads: int
    text_tokens: int  # keys/values: the text encoder's positions
    parameters: int

    @property
    def label(self) -> str:
        return layer_label(self.name, self.size)


@torch.no_grad()
def cross_attention_layers(pipe: Any) -> list[CrossAttentionLayer]:
    """The UNet's cross-attention layers in the order a forward pass calls them.

    Runs the UNet once on a zero latent and zero text embeddings, with a forward hook on every
    module named ``...attn2`` noting the number of queries it receives (h·w latent pixels).
    Module registration order is not call order (diffusers registers the mid block after the up
    blocks), which is why the layers are found by running the model.
    """
    unet = pipe.unet
    modules = {n: m for n, m in unet.named_modules() if n.endswith("attn2")}
    if not modules:
        raise ValueError("this UNet has no cross-attention (attn2) layers")
    seen: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=n: seen.setdefault(name, args[0].shape[1]))
        for n, m in modules.items()
    ]
    tokens = pipe.tokenizer.model_max_length
    side = unet.config.sample_size
    side = side if isinstance(side, int) else side[0]
    param = next(unet.parameters())
    latent = torch.zeros(1, unet.config.in_channels, side, side, device=param.device, dtype=param.dtype)
    text = torch.zeros(1, tokens, unet.config.cross_attention_dim, device=param.device, dtype=param.dtype)
    try:
        unet(latent, 500, encoder_hidden_states=text)
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for name, queries in seen.items():  # insertion order = call order
        s = math.isqrt(queries)
        m = modules[name]
        layers.append(CrossAttentionLayer(
            name=name, size=(s, queries // s), heads=m.heads, text_tokens=tokens,
            parameters=sum(p.numel() for p in m.parameters()),
        ))
    return layers


_BLOCK = re.compile(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)")


def layer_label(name: str, size: tuple[int, int] | None = None) -> str:
    """``down_blocks.1.attentions.0...`` -> ``down1.0``; ``mid_block...`` -> ``mid``; plus ``h×w``."""
    match = _BLOCK.search(name)
    if match:
        short = f"{match[1]}{match[2]}.{match[3]}"
    elif "mid_block" in name:
        short = "mid"
    else:
        short = name.removesuffix(".processor")
    return short if size is None else f"{short} {size[0]}×{size[1]}"


def map_grid(
    recorder: AttentionRecorder,
    image: PIL.Image.Image,
    words: Sequence[str],
    views: Mapping[str, Mapping[str, Any]],
    *,
    branch: str = "sty",
    alpha: float = 0.6,
    size: float = 1.3,
    title: str | None = None,
) -> plt.Figure:
    """A figure with one row per word and one column per view, over a grey copy of ``image``.

    ``views`` maps a column title to keyword arguments of :meth:`AttentionRecorder.aggregate`
    (``resolution``, ``steps``, ``layers``). Each panel is scaled to its own maximum, so panels
    compare *where* a word attends, not how strongly.
    """
    words = list(words)
    if not words or not views:
        raise ValueError("map_grid needs at least one word and one view")
    fig, axes = plt.subplots(
        len(words), len(views), figsize=(size * len(views) + 0.6, size * len(words) + 0.5),
        squeeze=False,
    )
    for c, (label, kwargs) in enumerate(views.items()):
        maps = recorder.aggregate(words, branch=branch, image_size=image.size[::-1], **kwargs)
        for r, word in enumerate(words):
            ax = axes[r, c]
            ax.imshow(np.asarray(overlay(image, maps[word], alpha, grey=True)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8)
            if c == 0:
                ax.set_ylabel(word, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def concentration(
    recorder: AttentionRecorder,
    words: Sequence[str],
    *,
    branch: str = "sty",
    resolution: int | None = None,
    top: float = 0.1,
    image: int = 0,
) -> tuple[list[int], dict[str, list[float]]]:
    """Per recorded step, the share of each word's attention mass in its top ``top`` of pixels.

    For every layer (all, or those at latent side ``resolution``) the word's map (its tokens
    summed, heads averaged) is sorted; the mass of the largest ``ceil(top·h·w)`` pixels over the
    total mass is averaged over layers. ``top`` means an even spread, 1 all mass in that share.
    Returns ``(steps, {word: [value per step]})``.
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    indices = recorder.word_indices(list(words), branch)
    b = recorder.branches.index(branch)
    layers = recorder.layers(resolution)
    if not layers:
        raise ValueError(f"no recorded layers at resolution {resolution}; recorded: "
                         f"{sorted(set(recorder.sizes.values()))}")
    steps = recorder.recorded_steps
    out: dict[str, list[float]] = {}
    for word, idx in indices.items():
        values = []
        for step in steps:
            shares = []
            for name in layers:
                maps = recorder.maps[name].get(step)
                if maps is None:
                    continue
                flat = maps[b, image][..., idx].sum(-1).flatten()
                k = max(1, math.ceil(top * flat.numel()))
                total = float(flat.sum())
                shares.append(float(flat.topk(k).values.sum()) / total if total > 0 else top)
            values.append(float(np.mean(shares)))
        out[word] = values
    return steps, out


def describe_pipeline(pipe: Any, model: str) -> None:
    """Print a pipeline's parts and their sizes: the reader sees that the miniature model and SD 1.5
    are the same diffusers classes, differing only in scale."""
    from ..pipeline import image_size

    size = image_size(pipe)
    print(f"{type(pipe).__name__} from {model}, {size}×{size} pictures, on {pipe.device}")
    for name in ("vae", "text_encoder", "unet"):
        module = getattr(pipe, name)
        print(f"  {name:13s} {type(module).__name__:22s} "
              f"{sum(p.numel() for p in module.parameters()) / 1e6:7.2f} M parameters")
    print(f"  {'tokenizer':13s} {type(pipe.tokenizer).__name__:22s} {len(pipe.tokenizer):7d} tokens")
    print(f"  {'scheduler':13s} {type(pipe.scheduler).__name__}")


def latent_channel_image(channel: torch.Tensor) -> PIL.Image.Image:
    """One latent channel as a grey picture, stretched to its own range: latents are not pictures,
    but each channel still shows the face's layout, which is what diffusion works on."""
    a = channel.float().cpu().numpy()
    return PIL.Image.fromarray(np.uint8(255 * (a - a.min()) / (np.ptp(a) + 1e-8)))


def pixel_spread(pictures: Sequence[PIL.Image.Image]) -> float:
    """Mean absolute pixel difference (values 0-255) over all pairs of pictures; NaN for fewer than
    two. How far apart the seeds' pictures are: guidance trades this variety for the caption."""
    a = [np.asarray(p, float) for p in pictures]
    pairs = [np.abs(x - y).mean() for i, x in enumerate(a) for y in a[i + 1:]]
    return float(np.mean(pairs)) if pairs else float("nan")


def plot_layer_sides(layers: Sequence[CrossAttentionLayer]) -> plt.Figure:
    """The latent side of every cross-attention layer in forward order: the UNet's "U", so the
    reader sees which layers see the face in a few pixels and which at full size."""
    order = np.arange(len(layers))
    sides = [layer.size[0] for layer in layers]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot(order, sides, "-o", color="#c0392b")
    for x, layer in zip(order, layers, strict=True):
        ax.annotate(layer.label.split()[0], (x, layer.size[0]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    ax.set_yscale("log", base=2)
    ax.set_yticks(sorted(set(sides)), [f"{s}×{s}" for s in sorted(set(sides))])
    ax.set_xticks(order, [""] * len(order))
    ax.set_xlabel("cross-attention layers in the order a forward pass runs them (down, mid, up)")
    ax.set_ylabel("latent side")
    ax.set_ylim(min(sides) / 1.6, max(sides) * 1.6)
    ax.set_title("where text enters the UNet", fontsize=9)
    return fig


def plot_noise_schedule(alphas_cumprod: torch.Tensor, marks: Sequence[int]) -> plt.Figure:
    """Signal and noise weights over the training timesteps, with ``marks`` dotted: how much of the
    source a latent keeps at the depth FCC starts from."""
    abar = alphas_cumprod
    fig, ax = plt.subplots(figsize=(5, 2.4))
    ax.plot(abar.sqrt(), label="signal  √ᾱ_t")
    ax.plot((1 - abar).sqrt(), label="noise  √(1-ᾱ_t)")
    ax.scatter(marks, abar[list(marks)].sqrt(), color="k", s=12, zorder=3)
    ax.set_xlabel("timestep t")
    ax.legend(fontsize=8)
    return fig


def identifier_grid(generate: Any, ids: Any, seeds: Sequence[int], title: str) -> plt.Figure:
    """The crossed prompts (:func:`styo.book.crossing.crossed_prompts`) as a picture grid. Rows:
    style word; columns: content word × seed, drawn by ``generate(prompt, seeds)`` (e.g.
    ``Chapter.generate``) from the same seeds every time, so a grid before and after IDL differs
    only by what the model learned."""
    from .crossing import crossed_prompts
    from .viz import show_grid

    word = {"S_src": ids.s_src, "S_tgt": ids.s_tgt, "C_src": ids.c_src, "C_tgt": ids.c_tgt}
    images = [im for prompt in crossed_prompts(ids).values() for im in generate(prompt, list(seeds))]
    titles = [f"{c} ({word[c]})\nseed {k}" for c in ("C_src", "C_tgt") for k in seeds]
    fig = show_grid(images, cols=2 * len(seeds), titles=titles + [""] * len(titles),
                    row_labels=[f"S_src ({word['S_src']})", f"S_tgt ({word['S_tgt']})"], size=1.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_idl_losses(losses: Sequence[float], term_losses: Mapping[str, Sequence[float]]) -> plt.Figure:
    """IDL's loss per step and each term's running mean (a twentieth of the run): a fresh timestep
    every step makes the raw loss jump, so only the mean shows the trend."""
    def smooth(values: Sequence[float], window: int) -> np.ndarray:
        return np.convolve(values, np.ones(window) / window, mode="valid")

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(steps) // 20)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
    axes[0].plot(steps, losses, color="0.8", lw=0.8, label="each step")
    axes[0].plot(steps[window - 1:], smooth(losses, window), color="k", label=f"mean of {window}")
    axes[0].set_title("total loss", fontsize=9)
    for term, values in term_losses.items():
        axes[1].plot(steps[window - 1:], smooth(values, window), label=term)
    axes[1].set_title(f"each term (mean of {window} steps)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("IDL step")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("noise-prediction MSE")
    return fig


def grounding_figure(pipe: Any, segmenter: Any, prompt: str, *, seed: int = 0, steps: int = 25,
                     guidance: float = 5.0, size: float = 1.3) -> tuple[plt.Figure, dict[str, float]]:
    """Where each region word of a world caption looks, against where its thing was drawn.

    One picture from ``prompt``; for each region the caption names (the noun of its phrase, and
    ``portrait`` for the head), the word's heat map by DAAM's protocol
    (:func:`styo.world.evaluate.daam_heats`) over the picture, and below it the region the
    segmentation judge reads. Titles carry the thresholded map's IoU with the region, the figure
    the base model's card averages over 120 captions. Returns the figure and ``{word: IoU}``.
    """
    from ..generate import generate_with_attention
    from ..world.evaluate import daam_heats, heat_iou
    from ..world.grounding import grounded_words
    from ..world.render import region_masks

    image, recorder = generate_with_attention(pipe, prompt, seed=seed, num_inference_steps=steps,
                                              guidance_scale=guidance, progress=False)
    words = prompt.split()
    chosen: dict[str, tuple[int, str]] = {}  # region -> (position, word): a phrase's noun comes last
    for position, target in grounded_words(prompt):
        chosen[target] = (position, words[position])
    heats = daam_heats(recorder, {t: [p + 1] for t, (p, _) in chosen.items()}, recorder.image_size)
    masks = region_masks(segmenter.regions([image])[0])
    ious = {word: heat_iou(heats[t], masks[t]) for t, (_, word) in chosen.items()}
    fig, axes = plt.subplots(2, len(chosen) + 1, figsize=(size * (len(chosen) + 1), 2 * size + 0.4))
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("picture", fontsize=8)
    axes[1, 0].imshow(np.asarray(image.convert("L")), cmap="gray")
    axes[1, 0].set_title("judged regions:", fontsize=8)
    for col, (target, (_, word)) in enumerate(chosen.items(), start=1):
        axes[0, col].imshow(overlay(image, heats[target], grey=True))
        axes[0, col].set_title(f"{word}\nIoU {ious[word]:.2f}", fontsize=8)
        axes[1, col].imshow(masks[target], cmap="gray", vmin=0, vmax=1)
        axes[1, col].set_title(target, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig, ious


def grounding_summary(grounded: Mapping[str, Any], sharp: Mapping[str, float]) -> tuple[str, str]:
    """The base model's recorded word-map figures (``grounding.json`` of ``styo world grounding``)
    as a table of regions, best first, and a sentence with the live ``sharp``-ness figures."""
    per, yardstick = grounded["miou_per_target"], grounded["ceiling_per_target"]
    lines = [f"over {grounded['n']} unseen captions (styo world grounding), IoU by region:"]
    lines += [f"  {t:11s} {per[t]:.2f}   (cell-share map: {yardstick[t]:.2f})"
              for t in sorted(per, key=per.get, reverse=True)]
    low = min(per, key=per.get)
    sentence = (f"Over {grounded['n']} captions never seen in training the mean IoU is **{grounded['miou']:.2f}** "
                f"(DAAM reports this range for Stable Diffusion's nouns); the lowest is **{low}**, "
                f"{per[low]:.2f}, against {yardstick[low]:.2f} for the cell-share map. Entropy "
                f"**{sharp['entropy']:.2f}** of uniform; {sharp['padding_mass']:.0%} of the attention rests "
                "on the padding.")
    return "\n".join(lines), sentence


def training_runs(training: Mapping[str, Any]) -> str:
    """A base model's ``training.json`` as lines: the run from scratch, each continuation
    (``lineage``: a model continued from another is the sum of every run before it), the total."""
    runs = [*training.get("lineage", []), training]
    # a snapshot (styo world snapshot) is its run stopped at a checkpoint: count the steps it took
    steps = [r.get("snapshot_of_step", r["config"]["unet_steps"]) for r in runs]
    hours = [(r["unet_sec_per_step_median"] or 0.0) * n / 3600 for r, n in zip(runs, steps, strict=True)]
    c = runs[0]["config"]
    lines = [f"from scratch: UNet + text encoder, {steps[0]:,} steps, batch {c['unet_batch']}, AdamW "
             f"{c['unet_lr']:g} ({c['warmup']} warm-up steps), EMA {c['ema_decay']} of the weights (what ships), "
             f"{c.get('layout', 'centred')} layout: {hours[0]:.1f} h",
             f"captions: empty with p = {c['empty_caption_p']}, each phrase dropped with p = {c['phrase_drop_p']}",
             f"data: {c['n_images']:,} text-to-image renders, {c['vae_images']:,} for the autoencoder"]
    for run, n, h in zip(runs[1:], steps[1:], hours[1:], strict=True):
        c = run["config"]
        stopped = f" (of {c['unet_steps']:,} scheduled)" if "snapshot_of_step" in run else ""
        lines.append(f"then {n:5,} steps{stopped}, batch {c['unet_batch']}, lr {c['unet_lr']:g}, "
                     f"{c.get('layout', 'centred')} layout; grounding {c.get('grounding_weight', 0.0):g}, "
                     f"threshold {c.get('threshold_weight', 0.0):g}"
                     f"{' at the picture' if c.get('threshold_at_picture') else ''}"
                     f"{''.join(f', {k} x{w:g}' for k, w in c.get('threshold_region_weights', {}).items())}"
                     f"{''.join(f', {k!r} x{w:g}' for k, w in c.get('threshold_word_weights', {}).items())}, "
                     f"padding {c.get('padding_weight', 0.0):g} "
                     f"beyond {c.get('padding_allowance', 0.0):g}, detail {c.get('detail_weight', 0.0):g}: {h:.1f} h")
    if "decoder_detail" in training:  # styo world sharpen-decoder, after the UNet's runs
        d = training["decoder_detail"]
        c = d["config"]
        hours.append(d["wall_seconds"] / 3600)
        lines.append(f"then the decoder alone, {c['steps']:,} steps, batch {c['batch']}, lr {c['lr']:g}, on "
                     f"{c['images']:,} renders of every style; eyes, mouth and glasses x{1 + c['part_weight']:g}: "
                     f"{hours[-1]:.1f} h")
    lines.append(f"in all {sum(steps):,} UNet steps, about {sum(hours):.1f} h "
                 f"on {training.get('device', 'the machine of each run')} (torch {training['torch']}; "
                 "median seconds per step of each run)")
    return "\n".join(lines)
