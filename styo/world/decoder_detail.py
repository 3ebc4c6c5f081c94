"""Sharpen a finished model's decoder where the face's small parts are: pretraining's stage 2c.

The UNet can only draw what the autoencoder's decoder paints. A closed eye is a line one or two
pixels tall, a narrow one little more, and stage 2b's decoder paints both faint and broken: the
segmentation judge finds much less of the eyes, the mouth and the glasses in its reconstructions
than in the renders (benchmarks/decoder_detail.py measures it). Pixel losses averaged over the
picture barely notice a missing 1-pixel line.

So the decoder alone is fine-tuned once more, with the pixels of the small regions (and their
neighbours, where a thin line's edges are) weighted up, keeping stage 2b's texture loss so no
style's texture is traded away. The encoder is frozen: the latents, and the UNet trained on them,
do not change, so this applies to any finished pipeline, as Stable Diffusion's ft-MSE decoder was
swapped into models trained on the original one.

Every random draw of step ``k`` comes from a generator seeded by ``(seed, k)``; checkpoints make
a killed run resume to the same weights.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from ..checkpoint import save_checkpoint
from .attributes import STYLES
from .pretrain import _render_set, _resume, _to_model_range, local_spectrum
from .render import REGIONS

DETAIL_PARTS: tuple[str, ...] = ("eyes", "mouth", "glasses")
# Seeds of the renders this stage trains on: apart from the text-to-image data (from 0), the
# autoencoder's (from 5,000,000) and the judges' ranges (from 3,000,000,000).
DETAIL_SEED_BASE = 5_900_000
# What a model folder may hold that was measured on its pictures: stale once the decoder changes.
MEASURED_FILES: tuple[str, ...] = ("metrics.json", "grounding.json", "samples.png")


@dataclass
class DecoderDetailConfig:
    steps: int = 800
    part_weight: float = 30.0  # extra weight of a pixel within one pixel of DETAIL_PARTS
    texture_weight: float = 10.0  # stage 2b's local-spectrum loss, kept
    lr: float = 1e-4
    batch: int = 32
    images: int = 6000  # every style, held-out ones included, in the varied layout
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.images < self.batch:
            raise ValueError("steps and batch must be at least 1 and images at least batch")
        if self.part_weight < 0 or self.texture_weight < 0 or self.lr <= 0:
            raise ValueError("part_weight and texture_weight must be >= 0 and lr > 0")


def part_weights(regions: torch.Tensor, part_weight: float) -> torch.Tensor:
    """Per-pixel loss weights (N, 1, H, W): 1, plus ``part_weight`` on and next to the small parts.

    The neighbours count because a line one pixel tall is mostly edge: a decoder that paints it
    one pixel off is as wrong as one that leaves it out.
    """
    parts = torch.isin(regions.long(), torch.tensor([REGIONS.index(r) for r in DETAIL_PARTS]))
    near = F.max_pool2d(parts[:, None].float(), kernel_size=3, stride=1, padding=1)
    return 1 + part_weight * near


def detail_loss(rec: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, texture_weight: float) -> torch.Tensor:
    """Weighted MSE + L1 over the pixels (normalised by the weights), plus the texture term."""
    d = rec - x
    pixels = ((d.square() + d.abs()) * weights).mean() / weights.mean()
    return pixels + texture_weight * F.l1_loss(local_spectrum(rec), local_spectrum(x))


def _data(work_dir: Path, cfg: DecoderDetailConfig) -> dict:
    seeds = range(DETAIL_SEED_BASE + cfg.seed * cfg.images, DETAIL_SEED_BASE + (cfg.seed + 1) * cfg.images)
    return _render_set(work_dir / "detail-dataset.npz", seeds, STYLES, "render detail dataset", layout="varied")


def train_decoder_detail(vae: AutoencoderKL, work_dir: str | Path, cfg: DecoderDetailConfig,
                         device: str = "cpu") -> AutoencoderKL:
    """Fine-tune ``vae``'s decoder in place (encoder frozen), resumably; returns it."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe, recipe_file = asdict(cfg), work_dir / "decoder-detail.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) != recipe:
        raise ValueError(f"{work_dir} holds a decoder-detail run of another recipe; start this one "
                         "in another work dir (--work-dir on the command line)")
    recipe_file.write_text(json.dumps(recipe, indent=1))
    data = _data(work_dir, cfg)
    regions = torch.from_numpy(data["regions"])
    vae.to(device).requires_grad_(False)
    trained = {"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv}
    params = [p for m in trained.values() for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    ckpt_dir = work_dir / "decoder-detail-checkpoints"
    start = _resume(ckpt_dir, trained, opt)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="decoder detail")
    for step in bar:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(regions), (cfg.batch,), generator=g)
        x = _to_model_range(data["images"], idx, device)
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        loss = detail_loss(vae.decode(z).sample, x, part_weights(regions[idx], cfg.part_weight).to(device),
                           cfg.texture_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(ckpt_dir, step + 1, trained, opt)
    vae.requires_grad_(False)
    return vae.eval()


def sharpen_decoder(model_dir: str | Path, out_dir: str | Path, work_dir: str | Path,
                    cfg: DecoderDetailConfig | None = None, device: str = "cpu") -> Path:
    """Write ``model_dir``'s pipeline to ``out_dir`` with its decoder fine-tuned by this stage.

    Everything but the VAE and the measurements (``MEASURED_FILES``) is copied as it is;
    ``training.json`` keeps the model's record and adds this stage's recipe under
    ``decoder_detail``. ``model_dir`` is never modified.
    """
    cfg = cfg or DecoderDetailConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    started = time.time()
    vae = AutoencoderKL.from_pretrained(model_dir / "vae", use_safetensors=True)
    train_decoder_detail(vae, work_dir, cfg, device)
    shutil.copytree(model_dir, out_dir, ignore=shutil.ignore_patterns("vae", *MEASURED_FILES))
    vae.to("cpu").save_pretrained(out_dir / "vae", safe_serialization=True)
    vae_config = out_dir / "vae" / "config.json"  # diffusers records where it loaded from: a local path
    vae_config.write_text(json.dumps({k: v for k, v in json.loads(vae_config.read_text()).items()
                                      if k != "_name_or_path"}, indent=2, sort_keys=True) + "\n")
    record_file = out_dir / "training.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    record["decoder_detail"] = {"config": asdict(cfg), "device": device, "torch": torch.__version__,
                                "wall_seconds": time.time() - started}
    record_file.write_text(json.dumps(record, indent=1))
    return out_dir
