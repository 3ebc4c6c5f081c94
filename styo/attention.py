"""Cross-attention maps in the open: recording them, and StyO's content control (FCC).

FCC's whole idea is one assignment (:func:`copy_content_maps`): in every cross-attention layer,
the stylization branch's attention maps for the content tokens are replaced by the reconstruction
branch's, ``M_sty[:, :, i_sty] = M_rec[:, :, i_rec]``, and the layer's output is ``M · V_sty``.
Everything else here is how that assignment reaches the UNet without touching diffusers:

- :class:`MapsProcessor` computes a cross-attention layer as diffusers' ``AttnProcessor`` does,
  with the ``Attention`` module's own helpers (``head_to_batch_dim``, ``get_attention_scores``,
  ``batch_to_head_dim``), and passes the probabilities through :meth:`MapsProcessor.maps` on their
  way to the values. Recording, FCC, the sharpness measure (:mod:`styo.sharpness`) and the
  pretraining's grounding loss (:mod:`styo.world.grounding`) are its subclasses; a call no one
  looks at goes to the layer's previous processor (fused SDPA), so unobserved layers cost nothing.
- :func:`attention_processors` installs processors with ``set_attn_processor`` and always puts
  the previous ones back (DAAM's ``trace()``); self-attention layers keep fused SDPA unless the
  self-attention sharing extension is on. Nothing is monkey-patched.

**Batch layout.** FCC runs both branches as one UNet batch of ``B`` image pairs. With
classifier-free guidance the batch is ``[uncond_rec, uncond_sty, cond_rec, cond_sty]``, each
block ``B`` rows; without it, ``[rec, sty]`` (all conditional). Row ``k`` of the stylization block
was diffused from the same latent as row ``k`` of the reconstruction block. Only the conditional
half is controlled or recorded; the unconditional rows always go through the layer's previous
processor.

**Steps.** The sampler tells the controller where it is by setting ``controller.step = i`` (the
index of the denoising step, 0-based) before each UNet call; one UNet call per step, since both
guidance halves are in the batch. ``control_steps``/``steps`` are sets of such indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import word_token_spans


def copy_content_maps(
    probs: torch.Tensor, rows: dict[str, slice], sty_idx: torch.Tensor, rec_idx: torch.Tensor
) -> torch.Tensor:
    """FCC itself: ``M_sty[..., i_sty] = M_rec[..., i_rec]`` for every mapped token pair.

    ``probs`` holds the conditional rows ``[rec, sty]`` (any head layout, tokens last). The
    stylization rows get the reconstruction rows' maps for the content tokens, so the content
    words put their attention where the source's did; the style columns keep their own maps.
    The input is left unchanged.
    """
    probs = probs.clone()
    sty = probs[rows["sty"]]  # a view into probs
    sty[..., sty_idx] = probs[rows["rec"]][..., rec_idx]
    return probs


class MapsProcessor:
    """A cross-attention processor that computes the attention maps explicitly and shows them.

    Subclasses choose which rows of a call need the maps (:meth:`rows`: the trailing rows from
    some index, or ``None`` for none) and what happens to them (:meth:`maps`: read them, or return
    changed ones). The other rows go to ``base``, the processor the layer had before.
    """

    def __init__(self, base: Any) -> None:
        self.base = base

    def rows(self, hidden_states: torch.Tensor) -> slice | None:
        """Rows whose maps are needed in this call: all of them unless a subclass says otherwise."""
        return slice(0, hidden_states.shape[0])

    def maps(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs`` ``[batch, heads, pixels, tokens]``, softmax over tokens; returns the maps used."""
        return probs

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        call = dict(attention_mask=attention_mask, temb=temb, **kwargs)
        rows = None if encoder_hidden_states is None else self.rows(hidden_states)
        if rows is None:
            return self.base(attn, hidden_states, encoder_hidden_states=encoder_hidden_states, **call)
        n = hidden_states.shape[0]
        mask = _rows_of(attention_mask, rows, n)
        out = self.attend(attn, hidden_states[rows], encoder_hidden_states[rows], mask)
        if rows.start == 0:
            return out
        head = slice(0, rows.start)
        rest = self.base(
            attn,
            hidden_states[head],
            encoder_hidden_states=encoder_hidden_states[head],
            **{k: _rows_of(v, head, n) for k, v in call.items()},
        )
        return torch.cat([rest, out])

    def attend(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """diffusers' ``AttnProcessor`` for a transformer block's cross-attention layer."""
        if hidden_states.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None \
                or attn.residual_connection or attn.norm_q is not None:
            raise ValueError(
                f"{type(self).__name__} handles the cross-attention layers of transformer blocks "
                "only (3-D input, no group/spatial norm, no residual, no q/k norm)"
            )
        batch, pixels, _ = hidden_states.shape
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, mask)  # [batch * heads, pixels, tokens]
        probs = self.maps(probs.view(batch, attn.heads, pixels, -1)).flatten(0, 1)
        out = attn.batch_to_head_dim(torch.bmm(probs.to(value.dtype), value))
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


def _rows_of(x: Any, rows: slice, batch_size: int) -> Any:
    """Rows of a per-sample tensor; anything else (None, broadcast masks) passes through."""
    if isinstance(x, torch.Tensor) and x.ndim > 0 and x.shape[0] == batch_size:
        return x[rows]
    return x


class ControlProcessor(MapsProcessor):
    """The cross-attention processor an :class:`AttentionController` drives: FCC and recording.

    It asks for the maps of the conditional rows only when the controller controls or records at
    this step; then the recorder gets each branch's own maps (before FCC) and FCC replaces the
    content columns of the stylization rows.
    """

    def __init__(self, controller: AttentionController, name: str, base: Any) -> None:
        super().__init__(base)
        self.controller = controller
        self.name = name

    def rows(self, hidden_states: torch.Tensor) -> slice | None:
        ctl = self.controller
        size = self._size(hidden_states)
        self._control = ctl.controls()
        self._record = ctl.recorder is not None and ctl.recorder.wants(ctl.step, size)
        if not (self._control or self._record):
            return None
        self._layer_size = size
        n = hidden_states.shape[0]
        return slice(branch_rows(n, ctl.guidance)["rec"].start, n)

    def maps(self, probs: torch.Tensor) -> torch.Tensor:
        rows = branch_rows(probs.shape[0], guidance=False)  # the conditional rows: [rec, sty]
        recorder = self.controller.recorder
        if self._record:
            maps = torch.stack([probs[rows[b]].mean(1) for b in recorder.branches])
            recorder.store(self.name, self.controller.step, maps, self._layer_size)
        if self._control:
            sty_idx, rec_idx = self.controller.indices(probs.device)
            probs = copy_content_maps(probs, rows, sty_idx, rec_idx)
        return probs

    def _size(self, hidden_states: torch.Tensor) -> tuple[int, int]:
        if hidden_states.ndim == 4:
            return tuple(hidden_states.shape[-2:])
        return self.controller.spatial_size(hidden_states.shape[1])


class SharedSelfAttnProcessor:
    """EXTENSION (not in the paper, off by default): self-attention map sharing.

    At controlled steps the stylization rows use the reconstruction rows' self-attention maps:
    ``softmax(q_rec k_recᵀ) · V_sty``, which keeps the source's spatial layout more strongly than
    cross-attention control alone (as in MasaCtrl/plug-and-play). It stays on fused SDPA by
    substituting the query and key, so it costs no explicit map.
    """

    def __init__(self, controller: AttentionController, name: str, base: Any) -> None:
        self.controller = controller
        self.name = name
        self.base = base

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        ctl = self.controller
        if not ctl.shares_self_attention() or encoder_hidden_states is not None:
            return self.base(
                attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                attention_mask=attention_mask, temb=temb, **kwargs,
            )
        if hidden_states.ndim != 3 or attention_mask is not None or attn.group_norm is not None \
                or attn.spatial_norm is not None or attn.residual_connection or attn.norm_q is not None:
            raise ValueError("self-attention sharing handles transformer blocks' self-attention only")
        rows = branch_rows(hidden_states.shape[0], ctl.guidance)
        query, key, value = (
            attn.head_to_batch_dim(f(hidden_states), out_dim=4) for f in (attn.to_q, attn.to_k, attn.to_v)
        )
        query, key = query.clone(), key.clone()
        query[rows["sty"]] = query[rows["rec"]]
        key[rows["sty"]] = key[rows["rec"]]
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        out = attn.batch_to_head_dim(out.flatten(0, 1))
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


def attention_layers(unet: torch.nn.Module) -> dict[str, bool]:
    """Processor key of every attention layer -> whether it is a cross-attention layer."""
    return {
        f"{name}.processor": bool(getattr(module, "is_cross_attention", False))
        for name, module in unet.named_modules()
        if hasattr(module, "set_processor") and hasattr(module, "get_processor")
    }


Make = Callable[[str, Any], Any]  # (layer name, its current processor) -> the new processor


def install_processors(unet: torch.nn.Module, cross: Make, self_attention: Make | None = None) -> dict:
    """Give every cross-attention layer ``cross(layer, processor)`` (and every self-attention
    layer ``self_attention(...)`` when given); returns the previous processors, to put back."""
    previous = dict(unet.attn_processors)
    is_cross = attention_layers(unet)
    installed = {}
    for key, proc in previous.items():
        make = cross if is_cross.get(key, False) else self_attention
        installed[key] = make(key.removesuffix(".processor"), proc) if make else proc
    unet.set_attn_processor(installed)
    return previous


@contextmanager
def attention_processors(
    unet: torch.nn.Module, cross: Make, self_attention: Make | None = None
) -> Iterator[None]:
    """:func:`install_processors` for the duration of a ``with`` block; the previous processors
    are always put back, also on error."""
    previous = install_processors(unet, cross, self_attention)
    try:
        yield
    finally:
        unet.set_attn_processor(previous)


@contextmanager
def attention_control(
    unet: torch.nn.Module, controller: AttentionController
) -> Iterator[AttentionController]:
    """Install FCC processors on the cross-attention layers; always restore the previous ones.

    Self-attention layers keep their processors, unless ``controller.share_self_attention`` is
    set when entering (then they get :class:`SharedSelfAttnProcessor`).
    """
    share = controller.share_self_attention
    with attention_processors(
        unet,
        lambda layer, proc: ControlProcessor(controller, layer, proc),
        (lambda layer, proc: SharedSelfAttnProcessor(controller, layer, proc)) if share else None,
    ):
        yield controller


BRANCHES = ("rec", "sty")


def branch_rows(batch_size: int, guidance: bool) -> dict[str, slice]:
    """Rows of the conditional rec/sty blocks in a UNet batch laid out as documented above."""
    blocks = 4 if guidance else 2
    if batch_size % blocks:
        raise ValueError(
            f"a batch of {batch_size} rows does not fit the FCC layout "
            f"({'[uncond_rec, uncond_sty, cond_rec, cond_sty]' if guidance else '[rec, sty]'} "
            f"× pairs); set controller.guidance to match the sampler"
        )
    pairs = batch_size // blocks
    start = 2 * pairs if guidance else 0
    return {"rec": slice(start, start + pairs), "sty": slice(start + pairs, start + 2 * pairs)}


class AttentionRecorder:
    """Stores head-averaged cross-attention probabilities per layer and step, for the cond rows.

    ``maps[layer][step]`` is a float tensor ``[len(branches), pairs, h, w, tokens]`` on ``device``;
    each map is the branch's own softmax (before FCC replaces columns), so it sums to 1 over tokens.

    Memory bound: only layers whose latent side ``max(h, w) <= max_resolution`` are stored
    (``None`` stores all). The default 32 keeps, for SD-1.5 at 512² (64² latents), the 32², 16² and
    8² layers and drops the five 64² ones, which alone would be 3/4 of the memory: about
    2 MB per branch, image and step in float32 (≈ 200 MB for 50 steps × 2 branches). The miniature
    world (16² latents) and the tiny test pipeline are stored in full.
    """

    def __init__(
        self,
        max_resolution: int | None = 32,
        branches: Sequence[str] = BRANCHES,
        steps: Collection[int] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        unknown = set(branches) - set(BRANCHES)
        if unknown or not branches:
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {branches}")
        self.max_resolution = max_resolution
        self.branches = tuple(branches)
        self.steps = None if steps is None else set(steps)
        self.device = torch.device(device)
        self.maps: dict[str, dict[int, torch.Tensor]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        # Set by the sampler so that words can be looked up and maps upsampled.
        self.tokenizer: Any = None
        self.prompts: dict[str, str] = {}
        self.image_size: tuple[int, int] | None = None

    def wants(self, step: int, size: tuple[int, int]) -> bool:
        """Whether a layer of this spatial size is stored at this step (the memory bound)."""
        if self.steps is not None and step not in self.steps:
            return False
        return self.max_resolution is None or max(size) <= self.max_resolution

    def store(self, layer: str, step: int, maps: torch.Tensor, size: tuple[int, int]) -> None:
        """Keep ``maps`` ``[branches, pairs, h*w, tokens]`` (already head-averaged)."""
        h, w = size
        maps = maps.detach().to(self.device, torch.float32)
        self.maps.setdefault(layer, {})[step] = maps.reshape(*maps.shape[:2], h, w, maps.shape[-1])
        self.sizes[layer] = size

    def clear(self) -> None:
        self.maps.clear()
        self.sizes.clear()

    @property
    def recorded_steps(self) -> list[int]:
        return sorted({s for per_step in self.maps.values() for s in per_step})

    def layers(self, resolution: int | None = None) -> list[str]:
        """Recorded layer names, optionally only those at latent side ``resolution``."""
        return [n for n, s in self.sizes.items() if resolution is None or max(s) == resolution]

    def word_indices(self, words: Sequence[str], branch: str = "sty") -> dict[str, list[int]]:
        """Token indices of each word in the branch's prompt (all occurrences)."""
        if self.tokenizer is None or branch not in self.prompts:
            raise ValueError("set recorder.tokenizer and recorder.prompts to look words up")
        return word_indices(self.tokenizer, self.prompts[branch], words)

    def aggregate(
        self,
        targets: Sequence[str] | Mapping[str, Sequence[int]],
        resolution: int | None = None,
        *,
        steps: Collection[int] | None = None,
        layers: Collection[str] | None = None,
        branch: str = "sty",
        image: int = 0,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-word heat maps at image resolution, each scaled to [0, 1] by its maximum.

        ``targets`` are words of the branch's prompt or ``{label: token indices}``. A word's map
        sums its tokens; maps are averaged over the chosen layers (all, or those at latent side
        ``resolution``) and steps, bilinearly upsampled to ``image_size``.
        """
        if not isinstance(targets, Mapping):
            targets = self.word_indices(list(targets), branch)
        size = image_size or self.image_size
        if size is None:
            raise ValueError("image_size unknown: pass image_size=(H, W)")
        per_res = self._sum_by_resolution(resolution, steps, layers, branch, image)
        heat = {label: torch.zeros(size) for label in targets}
        count = sum(n for _, n in per_res.values())
        for total, _ in per_res.values():
            for label, idx in targets.items():
                m = total[..., list(idx)].sum(-1)[None, None]
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                heat[label] += m[0, 0]
        return {label: _unit_scale(h / count) for label, h in heat.items()}

    def _sum_by_resolution(
        self,
        resolution: int | None,
        steps: Collection[int] | None,
        layers: Collection[str] | None,
        branch: str,
        image: int,
    ) -> dict[tuple[int, int], tuple[torch.Tensor, int]]:
        """Sum of the selected maps per spatial size (upsampling is linear, so sum first)."""
        b = self.branches.index(branch)
        sums: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}
        for name in self.layers(resolution):
            if layers is not None and name not in layers:
                continue
            for step, maps in self.maps[name].items():
                if steps is not None and step not in steps:
                    continue
                total, n = sums.get(self.sizes[name], (0, 0))
                sums[self.sizes[name]] = (total + maps[b, image], n + 1)
        if not sums:
            raise ValueError(
                f"no recorded maps match resolution={resolution}, steps={steps}, layers={layers}; "
                f"recorded: sizes {sorted(set(self.sizes.values()))}, steps {self.recorded_steps}"
            )
        return sums


def _unit_scale(heat: torch.Tensor) -> np.ndarray:
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    return heat.clamp(0, 1).numpy().astype(np.float32)


def word_indices(tokenizer: Any, prompt: str, words: Sequence[str]) -> dict[str, list[int]]:
    """Token indices of each word in ``prompt``, every occurrence; a missing word is an error."""
    spans = word_token_spans(tokenizer, prompt)
    out: dict[str, list[int]] = {}
    for word in words:
        idx = [i for w, ids in spans if w == word for i in ids]
        if not idx:
            raise KeyError(f"word {word!r} is not in prompt {prompt!r}")
        out[word] = idx
    return out


class AttentionController:
    """State shared by all processors of one UNet: step, content map, recorder, layout.

    ``content_map`` pairs (stylization token index, reconstruction token index);
    ``control_steps`` the step indices where FCC applies (``None``: every step);
    ``self_attention_steps`` those where self-attention is shared (``None``: ``control_steps``).
    ``latent_size`` (h, w) of the UNet input lets processors recover the spatial shape of a
    flattened layer; square layers work without it.
    """

    def __init__(
        self,
        content_map: Sequence[tuple[int, int]] = (),
        *,
        control_steps: Collection[int] | None = None,
        recorder: AttentionRecorder | None = None,
        guidance: bool = True,
        share_self_attention: bool = False,
        self_attention_steps: Collection[int] | None = None,
        latent_size: tuple[int, int] | None = None,
    ) -> None:
        self._index_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.content_map = content_map
        self.control_steps = None if control_steps is None else set(control_steps)
        self.recorder = recorder
        self.guidance = guidance
        self.share_self_attention = share_self_attention
        self.self_attention_steps = None if self_attention_steps is None else set(self_attention_steps)
        self.latent_size = latent_size
        self.step = 0

    @property
    def content_map(self) -> list[tuple[int, int]]:
        return self._content_map

    @content_map.setter
    def content_map(self, pairs: Sequence[tuple[int, int]]) -> None:
        self._content_map = [(int(i), int(j)) for i, j in pairs]
        self._index_cache.clear()

    def in_control_steps(self) -> bool:
        return self.control_steps is None or self.step in self.control_steps

    def controls(self) -> bool:
        """Whether cross-attention maps are replaced at the current step."""
        return bool(self.content_map) and self.in_control_steps()

    def shares_self_attention(self) -> bool:
        if self.self_attention_steps is None:
            return self.share_self_attention and self.in_control_steps()
        return self.share_self_attention and self.step in self.self_attention_steps

    def indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(stylization indices, reconstruction indices) as tensors on ``device``."""
        if device not in self._index_cache:
            sty, rec = zip(*self.content_map, strict=True)
            self._index_cache[device] = (
                torch.tensor(sty, device=device),
                torch.tensor(rec, device=device),
            )
        return self._index_cache[device]

    def spatial_size(self, tokens: int) -> tuple[int, int]:
        """(h, w) of a layer with ``tokens`` pixels, from the latent size's aspect."""
        if self.latent_size is not None:
            lh, lw = self.latent_size
            factor = round(math.sqrt(lh * lw / tokens))
            h, w = -(-lh // factor), -(-lw // factor)
            if h * w == tokens:
                return h, w
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"cannot infer the shape of {tokens} pixels: set latent_size")
        return side, side
