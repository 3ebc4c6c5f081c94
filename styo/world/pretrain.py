"""Pretrain the miniature world's text-to-image model from scratch, resumably.

Stages, each cached in ``work_dir`` so a killed run picks up where it stopped:
1. render the dataset (pretraining styles only: held-out styles are never seen);
2. train the VAE (2b: then fine-tune its decoder for texture, encoder frozen);
3. encode every image once (posterior mean and std);
4. train the UNet and the text encoder jointly on captions, with an EMA of both (optionally
   with the grounding loss of :mod:`styo.world.grounding`, and from an earlier model's weights);
5. assemble a diffusers ``StableDiffusionPipeline`` and ``save_pretrained`` it (safetensors).
Every random draw of step ``k`` comes from a generator seeded by ``(seed, stage, k)``, so a resumed
run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from ..pipeline import assemble_pipeline
from ..profiles import PROFILE_FILE
from . import architecture as arch
from . import grounding, people
from .attributes import ATTRIBUTES, PRETRAIN_STYLES, STYLES
from .captions import caption
from .render import LAYOUTS, REGIONS, render_batch, render_regions


@dataclass
class PretrainConfig:
    seed: int = 0
    n_images: int = 40_000
    vae_images: int = 20_000
    vae_steps: int = 3000
    vae_batch: int = 32
    vae_crop: int = 32  # train the codec on aligned crops (4x cheaper), then on whole images
    vae_full_steps: int = 300  # the last steps see whole 64x64 images (mid-block attention, norms)
    vae_polish_steps: int = 700  # then more whole-image steps at a constant rate
    vae_polish_lr: float = 2e-4
    vae_texture_steps: int = 600  # stage 2b: decoder-only steps with the local-spectrum loss
    vae_texture_weight: float = 10.0
    vae_texture_lr: float = 1e-4
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 4000
    unet_batch: int = 128
    unet_lr: float = 3e-4
    warmup: int = 100
    empty_caption_p: float = 0.1
    phrase_drop_p: float = 0.2
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    layout: str = "centred"  # the renderer's head placement (render.LAYOUTS) of the caption data
    grounding_weight: float = 0.0  # token + pixel loss of the grounded words' maps
    threshold_weight: float = 0.0  # soft IoU of the grounded words' maps as DAAM thresholds them
    threshold_at_picture: bool = False  # ... scored at the picture's resolution (the maps upsampled
    # bicubically, as DAAM scores them), not on the latent cells
    threshold_temperature: float = 0.1  # the soft step's width, in units of the map's range: the
    # picture's thousands of background pixels each leak sigmoid(-0.4 / width) into the union
    threshold_region_weights: dict[str, float] = field(default_factory=dict)  # a word's term times
    # its target's weight (grounding.WORD_TARGETS; 1 where not given): a few-pixel region's words
    # are a small share of the mean over every grounded word, and its border is the hardest to trace
    threshold_word_weights: dict[str, float] = field(default_factory=dict)  # ... and times its word's
    # weight (grounding.word_weight: a noun takes its value's), so one shape of a region can be weighted
    padding_weight: float = 0.0  # attention mass on the positions after the end token ...
    padding_allowance: float = 0.0  # ... beyond this share per caption (a hinge; 0 = all of it)
    detail_weight: float = 0.0  # extra denoising weight on latent cells covered by DETAIL_REGIONS
    draw_seed: int | None = None  # the UNet steps' random draws (default: seed); a continuation
    # over the same dataset takes a new one so that it sees new batches
    init_from: str | None = None  # a pipeline folder whose UNet and text encoder stage 4 continues
    people: int = 0  # named people (styo.world.people) in the captions; 0 = attribute captions only
    people_images: int = 64  # pictures of each person
    people_share: float = 0.25  # share of each UNet batch drawn from the people's pictures
    name_lr: float | None = None  # rate of the names' token embeddings alone (the other rows of
    # the table then stay as they are); None: the names learn with everything else at unet_lr
    train_only: tuple[str, ...] = ()  # with init_from: only the UNet parameters whose names hold
    # one of these (e.g. "attn2.to_q"); the rest of the UNet and the text encoder stay as they were

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; valid layouts: {', '.join(LAYOUTS)}")
        people.names(self.people)  # a clear error for a cast larger than the names
        if not 0 <= self.people_share < 1:
            raise ValueError(f"people_share must be in [0, 1), got {self.people_share}")
        for region, weight in self.threshold_region_weights.items():
            if region not in grounding.WORD_TARGETS or not weight >= 0:
                raise ValueError(f"threshold_region_weights takes {', '.join(grounding.WORD_TARGETS)} "
                                 f"with weights >= 0, got {region}={weight}")
        if self.train_only and not self.init_from:
            raise ValueError("train_only continues a finished model: give init_from too")
        vocabulary = grounding.grounded_vocabulary()
        for word, weight in self.threshold_word_weights.items():
            if word not in vocabulary or not weight >= 0:
                raise ValueError("threshold_word_weights takes words a caption grounds (attribute values, "
                                 f"their nouns, glasses, portrait) with weights >= 0, got {word}={weight}")

    @property
    def grounded(self) -> bool:
        return self.grounding_weight > 0 or self.padding_weight > 0 or self.threshold_weight > 0


# Eyes and mouth are a few pixels of a 64-pixel portrait: under a plain mean squared error over the
# 16x16 latent their shape is about one percent of the loss, so a base model can draw them the same
# whatever the caption says. ``detail_weight`` raises their cells' share of the denoising loss.
DETAIL_REGIONS = ("eyes", "mouth")


def detail_weights(regions: torch.Tensor, size: int, weight: float) -> torch.Tensor:
    """Per-cell weights (N, 1, size, size) of the denoising loss: 1 + ``weight`` times the share of
    the cell that the detail regions cover, divided by the batch mean so the loss keeps its scale."""
    cover = grounding.target_coverage(regions, size)
    detail = cover[:, [REGIONS.index(r) for r in DETAIL_REGIONS]].sum(1, keepdim=True)
    w = 1 + weight * detail
    return w / w.mean()


def denoising_loss(pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None
                   ) -> torch.Tensor:
    """Mean squared error of the predicted noise, weighted per latent cell when ``weights`` is given."""
    if weights is None:
        return F.mse_loss(pred, noise)
    return ((pred - noise) ** 2 * weights).mean()


def _generator(seed: int, stage: int, step: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed * 1_000_003 + stage * 100_003 + step)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


def _labelled(images: np.ndarray, styles: list[str], attributes: list[dict[str, str]],
              regions: np.ndarray, **extra: list[int]) -> dict[str, np.ndarray]:
    """Rendered pictures as the arrays a dataset keeps: style and attribute values as indices."""
    return {
        "images": images,
        "styles": np.asarray([STYLES.index(s) for s in styles], np.int64),  # index into STYLES
        "attributes": np.asarray([[ATTRIBUTES[k].index(a[k]) for k in ATTRIBUTES] for a in attributes], np.int64),
        "regions": regions,  # index into render.REGIONS
        **{k: np.asarray(v, np.int64) for k, v in extra.items()},
    }


def _render_chunk(args: tuple[range, tuple[str, ...], str]) -> dict[str, np.ndarray]:
    seeds, styles, layout = args
    return _labelled(*render_batch(seeds, styles=styles, layout=layout, regions=True))


def _render_cached(path: Path, n: int, render_chunk, chunks: list, desc: str, workers: int
                   ) -> dict[str, np.ndarray]:
    """Load ``path`` if it holds ``n`` labelled pictures with region maps; else render ``chunks``
    (``workers`` processes when more than one), join the parts key by key and save them there.

    Each picture depends on its own seed alone, so the worker count does not change the arrays.
    """
    if path.exists():
        data = dict(np.load(path))
        if len(data["images"]) == n and "regions" in data:
            return data
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            parts = list(tqdm(pool.map(render_chunk, chunks), total=len(chunks), desc=desc))
    else:
        parts = [render_chunk(c) for c in tqdm(chunks, desc=desc)]
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.savez(path, **data)
    return data


def _render_set(path: Path, seeds: range, styles: tuple[str, ...], desc: str,
                workers: int = 1, chunk: int = 1000, layout: str = "centred") -> dict[str, np.ndarray]:
    """Render (or load the cached) labelled images of ``seeds``, styles drawn from ``styles``,
    with their region maps.

    Each image depends on its seed alone, so ``workers`` processes give the same array as one.
    """
    chunks = [(seeds[i : i + chunk], styles, layout) for i in range(0, len(seeds), chunk)]
    return _render_cached(path, len(seeds), _render_chunk, chunks, desc, workers)


def build_dataset(work_dir: Path, cfg: PretrainConfig, workers: int = 1) -> dict[str, np.ndarray]:
    """The text-to-image data: pretraining styles only (held-out styles are never captioned)."""
    base = cfg.seed * 10_000_000
    return _render_set(work_dir / "dataset.npz", range(base, base + cfg.n_images),
                       PRETRAIN_STYLES, "render dataset", workers, layout=cfg.layout)


def _render_people_chunk(args: tuple[range, int, list[dict[str, str]], int, str]) -> dict[str, np.ndarray]:
    pictures, base, cast, per_person, layout = args
    who = [i // per_person for i in pictures]
    drawn = [people.draw_picture(cast[person], base + i) for person, i in zip(who, pictures, strict=True)]
    rendered = [render_regions(a, style, base + i, layout=layout) for (style, a), i in zip(drawn, pictures, strict=True)]
    return _labelled(np.stack([np.asarray(image) for image, _ in rendered]), [s for s, _ in drawn],
                     [a for _, a in drawn], np.stack([labels for _, labels in rendered]), person=who)


def build_people_dataset(work_dir: Path, cfg: PretrainConfig, workers: int = 1) -> dict[str, np.ndarray]:
    """Pictures of the named people (``cfg.people_images`` each, pretraining styles, the run's
    layout), with their region maps and ``person`` (index into :func:`people.names`)."""
    n = cfg.people * cfg.people_images
    if n > people.SEED_STRIDE:
        raise ValueError(f"at most {people.SEED_STRIDE} pictures of the cast, not {n}")
    base = cfg.seed * 10_000_000 + people.SEED_OFFSET
    cast = people.faces(cfg.people)
    chunks = [(range(i, min(i + 500, n)), base, cast, cfg.people_images, cfg.layout) for i in range(0, n, 500)]
    return _render_cached(work_dir / "people.npz", n, _render_people_chunk, chunks, "render people", workers)


def with_people(data: dict, latents: dict, cast: dict, cast_latents: dict) -> tuple[dict, dict]:
    """The caption data and its latents with the people's pictures appended (``person`` is -1 for
    the attribute-captioned pictures); the latent scale stays the main dataset's."""
    joined = {k: np.concatenate([data[k], cast[k]]) for k in ("styles", "attributes", "regions")}
    joined["person"] = np.concatenate([np.full(len(data["styles"]), -1, np.int64), cast["person"]])
    lat = {k: torch.cat([latents[k], cast_latents[k]]) for k in ("mean", "std")}
    return joined, lat | {"scaling_factor": latents["scaling_factor"]}


def build_vae_dataset(work_dir: Path, cfg: PretrainConfig, workers: int = 1) -> dict[str, np.ndarray]:
    """The autoencoder's data: every style, held-out ones included.

    The VAE plays the part of SD's autoencoder, a generic image codec trained on far broader data
    than any caption set: it must be able to *represent* a style the text-to-image model has never
    seen, or no one-shot fine-tuning could ever produce it. Holding a style out of the VAE too made
    mosaic tiles and halftone dots unrepresentable (five times photo's reconstruction error and more;
    the model card, models/README.md, has the figures). Seeds are disjoint from the text-to-image data.
    """
    base = cfg.seed * 10_000_000 + 5_000_000
    return _render_set(work_dir / "vae-dataset.npz", range(base, base + cfg.vae_images), STYLES,
                       "render VAE dataset", workers)


def _to_model_range(images: np.ndarray, idx: torch.Tensor, device: str) -> torch.Tensor:
    x = torch.from_numpy(images[idx.numpy()]).to(device)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _resume(ckpt_dir: Path, modules: dict, opt: torch.optim.Optimizer) -> int:
    found = list_checkpoints(ckpt_dir)
    if not found:
        return 0
    return load_checkpoint(found[-1], modules, opt)["step"]


def _aligned_crop(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """One random crop per batch, its corner on the 8-pixel grid (pixel-art cells stay aligned).

    The codec is convolutional, so, like SD's VAE (trained on 256² crops, used at 512²), it learns
    textures from crops at a quarter of the cost of whole 64×64 images.
    """
    if size >= x.shape[-1]:
        return x
    top, left = (int(v) * 8 for v in torch.randint(0, (x.shape[-1] - size) // 8 + 1, (2,), generator=g))
    return x[..., top : top + size, left : left + size]


def _vae_weights_file(folder: Path) -> Path:
    """The VAE weights of an AutoencoderKL folder, or of a pipeline folder's ``vae/``."""
    if (folder / "model_index.json").exists():
        folder = folder / "vae"
    path = folder / "diffusion_pytorch_model.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"{folder} holds no diffusion_pytorch_model.safetensors; give a folder written by "
            "AutoencoderKL.save_pretrained (e.g. models/styo-mini-vae) or a pipeline folder"
        )
    return path


def load_vae_weights(vae_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A finished VAE's weights, checked against this world's architecture."""
    path = _vae_weights_file(Path(vae_dir))
    state = load_file(path)
    try:
        arch.build_vae().load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path} is not a VAE of the miniature world's architecture: {e}") from e
    return state


ENCODER_PREFIXES = ("encoder.", "quant_conv.")


def same_encoder(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two VAEs make the same latents (the decoder may differ)."""
    keys = [k for k in a if k.startswith(ENCODER_PREFIXES)]
    return bool(keys) and all(k in b and torch.equal(a[k], b[k]) for k in keys)


def adopt_vae(vae_dir: str | os.PathLike, work_dir: Path) -> None:
    """Use a finished VAE as stage 2's result instead of training one (SD, too, reuses its VAE).

    Everything after stage 2 (latents, UNet) depends on the encoder only, so a work dir holding a
    VAE with another encoder is refused, while one that differs only in its decoder (a
    stage-2b fine-tune) takes the new decoder, as SD's pipelines took its ft-MSE decoder.
    """
    state = load_vae_weights(vae_dir)
    final = work_dir / "vae.safetensors"
    held = load_file(final) if final.exists() else None
    if held is not None and not same_encoder(state, held):
        raise ValueError(f"{work_dir} already holds a VAE with a different encoder; use a new --work-dir")
    if held is None or held.keys() != state.keys() or any(not torch.equal(held[k], state[k]) for k in state):
        save_file(state, final)  # the CLI adopts before pretrain() does: the second call writes nothing


def _load_vae(path: Path, device: str):
    vae = arch.build_vae()
    vae.load_state_dict(load_file(path))
    return vae.to(device)


def export_vae(work_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """The run's finished VAE (stage 2b's) as an AutoencoderKL folder (``from_pretrained``-loadable)."""
    _load_vae(Path(work_dir) / "vae.safetensors", "cpu").save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def _vae_lr(step: int, cfg: PretrainConfig) -> float:
    """The main schedule over ``vae_steps``, then a constant rate for the polish steps: a run
    with more polish steps passes through every step of a run with fewer, so polishing can be
    extended, or stopped, where the measured quality asks, and stays reproducible."""
    if step < cfg.vae_steps:
        return cfg.vae_lr * _lr_factor(step, cfg.vae_steps, cfg.warmup)
    return cfg.vae_polish_lr


def train_vae(data: dict, work_dir: Path, cfg: PretrainConfig, device: str):
    """Stage 2: a small KL autoencoder (MSE + L1 + tiny KL), resumable."""
    final = work_dir / "vae-mse.safetensors"
    if final.exists():
        return _load_vae(final, device)
    torch.manual_seed(cfg.seed)
    vae = arch.build_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    ckpt_dir = work_dir / "vae-checkpoints"
    start = _resume(ckpt_dir, {"vae": vae}, opt)
    n = len(data["images"])
    total = cfg.vae_steps + cfg.vae_polish_steps
    bar = tqdm(range(start, total), initial=start, total=total, desc="VAE")
    for step in bar:
        g = _generator(cfg.seed, 2, step)
        for group in opt.param_groups:
            group["lr"] = _vae_lr(step, cfg)
        x = _to_model_range(data["images"], torch.randint(0, n, (cfg.vae_batch,), generator=g), device)
        if step < cfg.vae_steps - cfg.vae_full_steps:
            x = _aligned_crop(x, cfg.vae_crop, g)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        rec = vae.decode(z).sample
        kl = post.kl().mean()
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x) + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_checkpoint(ckpt_dir, step + 1, {"vae": vae}, opt)
    _save_vae(vae, final)
    return vae


def _save_vae(vae, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, path)


def local_spectrum(x: torch.Tensor, patch: int = 16, stride: int = 8) -> torch.Tensor:
    """Amplitude spectra of overlapping, windowed patches: how much texture of each frequency an
    image has where, blind to the texture's phase.

    An MSE codec that cannot encode the phase of a fine texture paints it as its flat mean, since
    lines drawn at the wrong phase cost twice a flat fill (sketch's 3-px hatching on a 4-px latent
    grid). Matching local amplitude spectra rewards the texture at any phase, the job SD's VAE
    gives to its perceptual and adversarial losses, without a second network.
    """
    p = x.unfold(2, patch, stride).unfold(3, patch, stride)
    p = p - p.mean(dim=(-1, -2), keepdim=True)
    w = torch.hann_window(patch, periodic=False, dtype=x.dtype, device=x.device)
    return torch.fft.rfft2(p * (w[:, None] * w[None, :])).abs() / patch


@torch.no_grad()
def _texture_style_weights(vae, data: dict, cfg: PretrainConfig, device: str, per_style: int = 32) -> torch.Tensor:
    """Draw probability of each training image in stage 2b: proportional to how much texture the
    MSE codec loses on its style (mean local-spectrum error on ``per_style`` images of each).

    Hard-example mining by style: the measured failure (sketch) gets most of the steps, and no
    style is named in the recipe.
    """
    styles = torch.from_numpy(np.asarray(data["styles"]))
    g = _generator(cfg.seed, 5, -1)
    error = torch.zeros(int(styles.max()) + 1)
    for k in styles.unique().tolist():
        pool = torch.nonzero(styles == k).flatten()
        idx = pool[torch.randperm(len(pool), generator=g)[:per_style]]
        x = _to_model_range(data["images"], idx, device)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        error[k] = F.l1_loss(local_spectrum(rec), local_spectrum(x)).item()
    weights = error[styles]
    return weights / weights.sum()


def train_decoder_texture(vae, data: dict, work_dir: Path, cfg: PretrainConfig, device: str):
    """Stage 2b: fine-tune the decoder only (MSE + L1 + local-spectrum loss), resumable.

    The encoder is frozen, so the latents, and everything trained on them, do not change: SD
    improved its released VAE the same way (the ft-EMA / ft-MSE decoders). Writes the VAE that
    the rest of the run and the shipped pipeline use.
    """
    final = work_dir / "vae.safetensors"
    if final.exists():
        return _load_vae(final, device)
    for module in (vae.encoder, vae.quant_conv):
        module.requires_grad_(False)
    trained = {"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv}
    opt = torch.optim.Adam([p for m in trained.values() for p in m.parameters()], lr=cfg.vae_texture_lr)
    # measured on the stage-2 codec, before any checkpoint is loaded, so a resumed run draws the same
    prob = _texture_style_weights(vae, data, cfg, device) if cfg.vae_texture_steps else None
    ckpt_dir = work_dir / "vae-texture-checkpoints"
    start = _resume(ckpt_dir, trained, opt)
    bar = tqdm(range(start, cfg.vae_texture_steps), initial=start, total=cfg.vae_texture_steps,
               desc="VAE texture")
    for step in bar:
        g = _generator(cfg.seed, 5, step)
        x = _to_model_range(data["images"], torch.multinomial(prob, cfg.vae_batch, True, generator=g), device)
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        rec = vae.decode(z).sample
        texture = F.l1_loss(local_spectrum(rec), local_spectrum(x))
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x) + cfg.vae_texture_weight * texture
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", texture=f"{texture.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.vae_texture_steps:
            save_checkpoint(ckpt_dir, step + 1, trained, opt)
    vae.requires_grad_(True)
    _save_vae(vae, final)
    return vae


@torch.no_grad()
def encode_dataset(vae, data: dict, work_dir: Path, device: str, name: str = "latents"
                   ) -> dict[str, torch.Tensor]:
    """Stage 3: posterior mean/std of every image, once, and SD's latent scaling factor."""
    path = work_dir / f"{name}.safetensors"
    if path.exists():
        return load_file(path)
    vae.eval()
    means, stds = [], []
    for start in tqdm(range(0, len(data["images"]), 256), desc="encode"):
        idx = torch.arange(start, min(start + 256, len(data["images"])))
        post = vae.encode(_to_model_range(data["images"], idx, device)).latent_dist
        means.append(post.mean.cpu().contiguous())
        stds.append(post.std.cpu().contiguous())
    mean, std = torch.cat(means), torch.cat(stds)
    # SD scales latents to unit variance (0.18215 for SD); ours is measured the same way.
    scale = torch.tensor(1.0 / mean.std().item())
    latents = {"mean": mean.contiguous(), "std": std.contiguous(), "scaling_factor": scale}
    save_file(latents, path)
    return latents


def _captions(data: dict, idx: np.ndarray, rng: np.random.Generator, cfg: PretrainConfig) -> list[str]:
    names = list(ATTRIBUTES)
    out = []
    for i in idx:
        if rng.random() < cfg.empty_caption_p:
            out.append("")
            continue
        attrs = {k: ATTRIBUTES[k][v] for k, v in zip(names, data["attributes"][i], strict=True)}
        style = STYLES[data["styles"][i]]
        person = int(data["person"][i]) if "person" in data else -1
        if person >= 0:
            out.append(people.person_caption(style, person, attrs, cfg.people, rng, drop_p=cfg.phrase_drop_p))
        else:
            out.append(caption(style, attrs, rng, drop_p=cfg.phrase_drop_p))
    return out


class _UNetBatches(torch.utils.data.Dataset):
    """Step ``k``'s random draws and token ids, a pure function of ``(seed, k)``.

    Building captions and tokenising them is Python work; on a GPU it would leave the device idle
    (the feasibility probe was CPU-bound at ~120 ms a step), so DataLoader workers prepare steps
    ahead. On CPU it runs inline. The draws are the same either way, so resume stays exact.
    """

    def __init__(self, data: dict, n_latents: int, latent_shape: tuple[int, ...], tokenizer,
                 cfg: PretrainConfig, num_train_timesteps: int):
        self.labels = {k: data[k] for k in ("styles", "attributes", "person") if k in data}
        self.n, self.shape, self.tokenizer, self.cfg = n_latents, latent_shape, tokenizer, cfg
        # the attribute-captioned pictures come first (with_people), the people's after them
        self.n_main = int((data["person"] < 0).sum()) if "person" in data else n_latents
        self.timesteps = num_train_timesteps

    def __len__(self) -> int:
        return self.cfg.unet_steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        cfg, b = self.cfg, self.cfg.unet_batch
        seed = cfg.seed if cfg.draw_seed is None else cfg.draw_seed
        g = _generator(seed, 4, step)
        rng = np.random.default_rng(seed * 1_000_003 + step)
        if self.n_main < self.n:  # a share of every batch from the people's pictures
            named = round(b * cfg.people_share)
            idx = torch.cat([torch.randint(0, self.n_main, (b - named,), generator=g),
                             torch.randint(self.n_main, self.n, (named,), generator=g)])
        else:
            idx = torch.randint(0, self.n, (b,), generator=g)
        eps_z = torch.randn((b, *self.shape), generator=g)
        noise = torch.randn((b, *self.shape), generator=g)
        t = torch.randint(0, self.timesteps, (b,), generator=g)
        captions = _captions(self.labels, idx.numpy(), rng, cfg)
        ids = self.tokenizer(
            captions, padding="max_length",
            max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt",
        ).input_ids
        batch = {"idx": idx, "eps_z": eps_z, "noise": noise, "t": t, "ids": ids}
        if cfg.grounded:
            batch |= grounding.batch_groundings(captions, ids, self.tokenizer.eos_token_id,
                                                cfg.threshold_word_weights)
        return batch


_TOKEN_EMBEDDING = "embeddings.token_embedding.weight"


def _carry_embeddings(state: dict[str, torch.Tensor], te, tokenizer, old_tokenizer) -> None:
    """Fit an earlier text encoder's weights to a larger vocabulary: each token the two
    tokenizers share keeps its learned row, a new token (a person's name) keeps its fresh one."""
    old = state[_TOKEN_EMBEDDING]
    rows = te.get_input_embeddings().weight.detach().clone()
    old_vocab = old_tokenizer.get_vocab()
    for token, i in tokenizer.get_vocab().items():
        if token in old_vocab:
            rows[i] = old[old_vocab[token]]
    state[_TOKEN_EMBEDDING] = rows


def _init_weights(unet, te, folder: str, tokenizer=None) -> None:
    """Start stage 4 from a finished pipeline's UNet and text encoder (safetensors only).

    With ``tokenizer`` larger than the pipeline's own (a cast of people added), the shared
    tokens keep their embeddings (:func:`_carry_embeddings`)."""
    root = Path(folder)
    for module, path in ((unet, root / "unet" / "diffusion_pytorch_model.safetensors"),
                         (te, root / "text_encoder" / "model.safetensors")):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: init_from must be a pipeline folder "
                                    "written by `styo world pretrain` (e.g. models/styo-mini)")
        state = load_file(path)
        if module is te and state[_TOKEN_EMBEDDING].shape != te.get_input_embeddings().weight.shape:
            from transformers import CLIPTokenizer

            _carry_embeddings(state, te, tokenizer, CLIPTokenizer.from_pretrained(root / "tokenizer"))
        module.load_state_dict(state)


def trained_parameter_names(unet, patterns: tuple[str, ...]) -> list[str]:
    """The UNet parameters whose names hold one of ``patterns``; a pattern that names none is an
    error, since it would silently train less than asked."""
    names = [name for name, _ in unet.named_parameters()]
    for pattern in patterns:
        if not any(pattern in name for name in names):
            raise ValueError(f"no UNet parameter name holds {pattern!r}; give a part of a name such as attn2.to_q")
    return [name for name in names if any(pattern in name for pattern in patterns)]


def freeze_all_but(unet, te, patterns: tuple[str, ...]) -> None:
    """Freeze the text encoder and every UNet parameter whose name holds none of ``patterns``.

    Why: the grounding losses ask only *where* each word acts, which the cross-attention's queries
    and keys decide. A continuation that trains the whole UNet for them also changes the
    convolutions and values that StyO's fine-tuning starts from; one that trains the queries and
    keys alone moves the maps, and changes the drawing only through them."""
    trained = set(trained_parameter_names(unet, patterns))
    te.requires_grad_(False)
    for name, p in unet.named_parameters():
        p.requires_grad_(name in trained)


def _param_groups(params: list[torch.nn.Parameter], te, tokenizer, cfg: PretrainConfig) -> list[dict]:
    """The optimiser's groups: everything at ``unet_lr``; with ``cfg.name_lr``, the token
    embeddings in a group of their own where only the names' rows learn.

    A name has to travel from its random start to a face, as textual inversion's embeddings do
    (at rates near 5e-3), while the rest of the model only adjusts (1e-4). Adam's step does not
    scale with the gradient, so the names get their own rate; the other rows' gradients are
    zeroed, so the words the model already knows stay where they are.
    """
    if not cfg.people or cfg.name_lr is None:
        return [{"params": params, "lr": cfg.unet_lr}]
    table = te.get_input_embeddings().weight
    rows = torch.zeros(table.shape[0], 1)
    rows[tokenizer.convert_tokens_to_ids([f"{n}</w>" for n in people.names(cfg.people)])] = 1.0
    table.register_hook(lambda grad: grad * rows.to(grad.device))
    return [{"params": [p for p in params if p is not table], "lr": cfg.unet_lr},
            {"params": [table], "lr": cfg.name_lr, "weight_decay": 0.0}]


def train_unet(data: dict, latents: dict, work_dir: Path, cfg: PretrainConfig, device: str,
               loader_workers: int = 0):
    """Stage 4: UNet + text encoder (from scratch or ``cfg.init_from``), AdamW, EMA weights kept
    for sampling; with ``cfg.grounded``, the grounding and padding losses beside the denoising one."""
    tokenizer = arch.build_tokenizer(people.names(cfg.people))
    torch.manual_seed(cfg.seed)
    unet, te = arch.build_unet().to(device), arch.build_text_encoder(tokenizer).to(device)
    if cfg.init_from:
        _init_weights(unet, te, cfg.init_from, tokenizer)
    if cfg.train_only:
        freeze_all_but(unet, te, cfg.train_only)
    processors = dict(unet.attn_processors)
    store = grounding.install(unet) if cfg.grounded else None
    region_weights = grounding.target_weights(cfg.threshold_region_weights, device)
    regions = torch.from_numpy(data["regions"]) if cfg.grounded or cfg.detail_weight > 0 else None
    params = [*unet.parameters(), *te.parameters()]
    ema = {f"p{i}": p.detach().clone() for i, p in enumerate(params)}
    groups = _param_groups(params, te, tokenizer, cfg)
    base_lrs = [g["lr"] for g in groups]  # kept here: a resumed optimiser takes its saved groups' rates
    opt = torch.optim.AdamW(groups, lr=cfg.unet_lr, weight_decay=0.01)
    sched = arch.train_scheduler()
    alphas = sched.alphas_cumprod.to(device)
    modules = {"unet": unet, "text_encoder": te, "ema": ema}
    ckpt_dir = work_dir / "unet-checkpoints"
    start = _resume(ckpt_dir, modules, opt)
    mean, std = latents["mean"].to(device), latents["std"].to(device)
    scale = latents["scaling_factor"].item()
    batches = _UNetBatches(data, len(mean), tuple(mean.shape[1:]), tokenizer, cfg,
                           sched.config.num_train_timesteps)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, cfg.unet_steps), num_workers=loader_workers,
        prefetch_factor=4 if loader_workers else None, pin_memory=device.startswith("cuda"),
    )
    bar = tqdm(loader, initial=start, total=cfg.unet_steps, desc="UNet")
    t0, times = time.time(), []
    for step, batch in enumerate(bar, start):
        for group, base_lr in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = base_lr * _lr_factor(step, cfg.unet_steps, cfg.warmup)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        idx = batch["idx"]
        z0 = (mean[idx] + std[idx] * batch["eps_z"]) * scale
        a = alphas[batch["t"]].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * batch["noise"]
        pred = unet(zt, batch["t"], encoder_hidden_states=te(batch["ids"])[0]).sample
        weights = (detail_weights(regions[idx.cpu()], zt.shape[-1], cfg.detail_weight).to(device)
                   if cfg.detail_weight > 0 else None)
        loss = denoising_loss(pred, batch["noise"], weights)
        if store is not None:
            side = zt.shape[-1]
            coverage = grounding.target_coverage(regions[idx.cpu()], side).to(device)
            maps = grounding.word_maps(store, side)
            ground = grounding.grounding_loss(maps, batch["g_rows"], batch["g_tokens"],
                                              batch["g_targets"], coverage)
            pad = grounding.padding_mass(store, batch["eos"], batch["captioned"],
                                         allowance=cfg.padding_allowance)
            store.clear()
            loss = loss + cfg.grounding_weight * ground + cfg.padding_weight * pad
            if cfg.threshold_weight > 0:  # skipped at 0, so earlier recipes stay bit-identical
                picture = (grounding.target_coverage(regions[idx.cpu()], regions.shape[-1]).to(device)
                           if cfg.threshold_at_picture else coverage)
                weights = None if region_weights is None else region_weights[batch["g_targets"]]
                if "g_weights" in batch:
                    weights = batch["g_weights"] if weights is None else weights * batch["g_weights"]
                shape = grounding.threshold_loss(maps, batch["g_rows"], batch["g_tokens"],
                                                 batch["g_targets"], picture, cfg.threshold_temperature,
                                                 weights)
                loss = loss + cfg.threshold_weight * shape
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for i, p in enumerate(params):
                ema[f"p{i}"].lerp_(p.detach(), 1 - decay)
        if store is not None:
            shown = {"shape": f"{shape.item():.3f}"} if cfg.threshold_weight > 0 else {}
            bar.set_postfix(loss=f"{loss.item():.4f}", ground=f"{ground.item():.3f}", pad=f"{pad.item():.3f}",
                            **shown)
        else:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        times.append(time.time() - t0)
        t0 = time.time()
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.unet_steps:
            save_checkpoint(ckpt_dir, step + 1, modules, opt, extra={"sec_per_step": float(np.median(times))})
    _use_ema(params, ema)
    unet.set_attn_processor(processors)
    return unet, te, tokenizer, float(np.median(times)) if times else None


@torch.no_grad()
def _use_ema(params: list[torch.nn.Parameter], ema: dict[str, torch.Tensor]) -> None:
    """Sampling uses the EMA weights, as SD's released checkpoints do."""
    for i, p in enumerate(params):
        p.copy_(ema[f"p{i}"])


def _save_pipeline(vae, te, tokenizer, unet, scaling_factor: float, out_dir: Path) -> None:
    vae.register_to_config(scaling_factor=scaling_factor)
    pipe = assemble_pipeline(vae.cpu(), te.cpu(), tokenizer, unet.cpu(), arch.sample_scheduler())
    pipe.save_pretrained(out_dir, safe_serialization=True)
    # The model names its own settings profile, so a copy or snapshot anywhere gets the mini one.
    (Path(out_dir) / PROFILE_FILE).write_text(json.dumps({"profile": "mini"}) + "\n")


def snapshot(work_dir: str | os.PathLike, out_dir: str | os.PathLike) -> int:
    """Save a pipeline from the newest UNet checkpoint's EMA weights; returns its step.

    A long CPU run can be measured while it trains (``styo world evaluate`` on the snapshot),
    which is how the model card's quality-by-steps figures are made.
    """
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    found = list_checkpoints(work_dir / "unet-checkpoints")
    if not found or not (work_dir / "vae.safetensors").exists():
        raise FileNotFoundError(f"{work_dir} holds no finished VAE and UNet checkpoint yet")
    config = work_dir / "config.json"
    recipe = json.loads(config.read_text()) if config.is_file() else None
    cast = recipe.get("people", 0) if recipe else 0
    tokenizer = arch.build_tokenizer(people.names(cast))
    unet, te = arch.build_unet(), arch.build_text_encoder(tokenizer)
    params = [*unet.parameters(), *te.parameters()]
    ema = {f"p{i}": p.detach().clone() for i, p in enumerate(params)}
    state = load_checkpoint(found[-1], {"unet": unet, "text_encoder": te, "ema": ema})
    step = state["step"]
    _use_ema(params, ema)
    vae = _load_vae(work_dir / "vae.safetensors", "cpu")
    scale = load_file(work_dir / "latents.safetensors")["scaling_factor"].item()
    _save_pipeline(vae, te, tokenizer, unet, scale, out_dir)
    record: dict = {"snapshot_of_step": step}
    if recipe is not None:  # the run's recipe and what it stood on, as a finished run records them
        record |= {"config": recipe, "unet_sec_per_step_median": state["extra"].get("sec_per_step"),
                   "torch": torch.__version__, "lineage": lineage(recipe.get("init_from"))}
    (out_dir / "training.json").write_text(json.dumps(record, indent=1))
    return step


def pretrain(out_dir: str | os.PathLike, work_dir: str | os.PathLike, cfg: PretrainConfig | None = None,
             device: str | None = None, workers: int | None = None,
             vae_dir: str | os.PathLike | None = None) -> Path:
    """Run (or resume) every stage and save the pipeline to ``out_dir``.

    ``workers`` (default: every core) render the datasets and, on a GPU, prepare the UNet's
    batches; the weights do not depend on it. ``vae_dir`` starts from a finished VAE (e.g. the
    shipped ``models/styo-mini-vae``, made by this same recipe) and skips stage 2.
    """
    cfg = cfg or PretrainConfig()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    workers = workers or os.cpu_count() or 1
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    started = time.time()
    if vae_dir is not None:
        adopt_vae(vae_dir, work_dir)
    if (work_dir / "vae.safetensors").exists():
        vae = _load_vae(work_dir / "vae.safetensors", device)
    else:
        vae_data = build_vae_dataset(work_dir, cfg, workers)
        vae = train_decoder_texture(train_vae(vae_data, work_dir, cfg, device), vae_data, work_dir, cfg, device)
    data = build_dataset(work_dir, cfg, workers)
    latents = encode_dataset(vae, data, work_dir, device)
    if cfg.people:
        cast = build_people_dataset(work_dir, cfg, workers)
        data, latents = with_people(data, latents, cast, encode_dataset(vae, cast, work_dir, device, "people-latents"))
    loader_workers = min(8, workers - 1) if device.startswith("cuda") else 0
    unet, te, tokenizer, sec_per_step = train_unet(data, latents, work_dir, cfg, device, loader_workers)
    _save_pipeline(vae, te, tokenizer, unet, latents["scaling_factor"].item(), out_dir)
    record = {
        "config": asdict(cfg), "device": device, "torch": torch.__version__,
        "vae_from": str(vae_dir) if vae_dir is not None else "trained in this run",
        "unet_sec_per_step_median": sec_per_step, "wall_seconds_this_run": time.time() - started,
        "lineage": lineage(cfg.init_from),
    }
    (out_dir / "training.json").write_text(json.dumps(record, indent=1))
    return out_dir


def lineage(init_from: str | os.PathLike | None) -> list[dict]:
    """The training records of the runs a continuation stands on, oldest first.

    A model continued from another (``init_from``) is the sum of every run before it; its
    ``training.json`` keeps their records, so its card can state the whole recipe and cost.
    """
    path = Path(init_from) / "training.json" if init_from else None
    if path is None or not path.is_file():
        return []
    parent = json.loads(path.read_text())
    return [*parent.pop("lineage", []), parent]
