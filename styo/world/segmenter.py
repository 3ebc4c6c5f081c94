"""The segmentation judge: reads a portrait's region map (where the hair, eyes, mouth... are).

An instrument, like the attribute and style judges: it lets the book ask *where* a generated
picture put each thing, so a word's cross-attention map can be scored against the region it
names (DAAM's protocol: the word's heat map, normalised and thresholded, against the region) and
a stylized head's geometry against the source's. It is trained on renders of every style, the
held-out ones included, with the ``"varied"`` layout, so the head can be anywhere a render puts it.

The network is a small U-Net (three levels, 16-32-64 channels, 0.12 M parameters) that labels every
pixel of a 64×64 RGB image in [-1, 1] with one of :data:`~styo.world.render.REGIONS`. Weights are
safetensors beside the other judges (``models/judges/segmenter.safetensors``), its config and
measured accuracy are JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .attributes import HELD_OUT_STYLES, STYLES
from .judges import DEFAULT_JUDGES, EVAL_SEED_BASE, SEED_STRIDE, TRAIN_SEED_BASE, to_judge_tensor
from .render import REGIONS, SIZE, region_masks, render_seed_regions

WEIGHTS_NAME = "segmenter.safetensors"
CONFIG_NAME = "segmenter.json"
FORMAT = "styo-segmenter"
CHANNELS = (16, 32, 64)
LAYOUT = "varied"
# Seeds: after the attribute judges' training and evaluation ranges of the same judge seed.
SEED_OFFSET = SEED_STRIDE // 2
MIOU_TARGET = 0.90
REGION_TARGET = 0.80


def train_seeds(seed: int, n: int) -> range:
    start = TRAIN_SEED_BASE + seed * SEED_STRIDE + SEED_OFFSET
    return range(start, start + n)


def eval_seeds(seed: int, n: int) -> range:
    start = EVAL_SEED_BASE + seed * SEED_STRIDE + SEED_OFFSET
    return range(start, start + n)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class SegmenterNet(nn.Module):
    """A three-level U-Net: two 2× poolings down, two 2× upsamplings with skip connections."""

    def __init__(self, channels: Sequence[int] = CHANNELS, n_regions: int = len(REGIONS)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.down1, self.down2, self.bottom = _block(3, c1), _block(c1, c2), _block(c2, c3)
        self.up2, self.up1 = _block(c3 + c2, c2), _block(c2 + c1, c1)
        self.head = nn.Conv2d(c1, n_regions, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Region logits (N, n_regions, H, W) of images (N, 3, H, W) in [-1, 1]."""
        d1 = self.down1(x)
        d2 = self.down2(F.max_pool2d(d1, 2))
        b = self.bottom(F.max_pool2d(d2, 2))
        u2 = self.up2(torch.cat([F.interpolate(b, scale_factor=2.0), d2], 1))
        u1 = self.up1(torch.cat([F.interpolate(u2, scale_factor=2.0), d1], 1))
        return self.head(u1)


class Segmenter:
    """A trained :class:`SegmenterNet` in eval mode."""

    def __init__(self, net: SegmenterNet, config: dict[str, Any] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.net = net.to(self.device).eval()
        self.config = config or {}

    @torch.no_grad()
    def regions(self, images: Any, value_range: tuple[float, float] | None = None,
                batch_size: int = 256) -> np.ndarray:
        """Region index per pixel, uint8 (N, 64, 64); images as :func:`~styo.world.judges.to_judge_tensor` takes."""
        x = to_judge_tensor(images, value_range)
        out = [self.net(x[i:i + batch_size].to(self.device)).argmax(1).cpu()
               for i in range(0, len(x), batch_size)]
        if not out:
            return np.zeros((0, SIZE, SIZE), np.uint8)
        return torch.cat(out).numpy().astype(np.uint8)

    def masks(self, images: Any, value_range: tuple[float, float] | None = None
              ) -> list[dict[str, np.ndarray]]:
        """One dict per image: a boolean mask per region name and ``"head"``."""
        return [region_masks(r) for r in self.regions(images, value_range)]


def save_segmenter(net: SegmenterNet, out_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / WEIGHTS_NAME)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")


def load_segmenter(path: str | os.PathLike | None = None,
                   device: str | torch.device | None = None) -> Segmenter:
    """Load the segmentation judge (default: the shipped one in ``models/judges``)."""
    folder = Path(path) if path is not None else DEFAULT_JUDGES
    weights, cfg_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    if not weights.is_file() or not cfg_file.is_file():
        raise FileNotFoundError(
            f"no segmentation judge at {folder} ({WEIGHTS_NAME} or {CONFIG_NAME} is missing); "
            f"train one with `styo world train-segmenter --out {folder}`")
    config = json.loads(cfg_file.read_text())
    if config.get("format") != FORMAT or config.get("regions") != list(REGIONS):
        raise ValueError(f"{cfg_file} is not a segmentation judge for this renderer's regions; "
                         "retrain it with `styo world train-segmenter`")
    net = SegmenterNet(config["architecture"]["channels"])
    net.load_state_dict(load_file(str(weights)))
    return Segmenter(net, config, device)


def render_labelled(seeds: range, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, 64, 64) and region maps (N, 64, 64), style ``i % len(STYLES)``."""
    images = torch.empty(len(seeds), 3, SIZE, SIZE, dtype=torch.uint8)
    regions = torch.empty(len(seeds), SIZE, SIZE, dtype=torch.uint8)
    for i, s in enumerate(tqdm(seeds, desc="render", disable=not progress, mininterval=2.0)):
        image, region_map, _, _ = render_seed_regions(s, style=STYLES[i % len(STYLES)], layout=LAYOUT)
        images[i] = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        regions[i] = torch.from_numpy(region_map)
    return images, regions


def iou_per_region(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """IoU of each region over a whole set of region maps (pixels pooled, as segmentation
    benchmarks pool them); a region absent from both counts as nothing."""
    out = {}
    for k, name in enumerate(REGIONS):
        p, t = pred == k, true == k
        union = np.logical_or(p, t).sum()
        out[name] = float(np.logical_and(p, t).sum() / union) if union else float("nan")
    return out


def evaluate_segmenter(segmenter: Segmenter, images: torch.Tensor, regions: torch.Tensor,
                       styles: Sequence[str]) -> dict[str, Any]:
    """Pooled IoU per region, its mean, and the same per style."""
    pred, true = segmenter.regions(images), regions.numpy()
    styles = np.asarray(styles)

    def summary(rows: np.ndarray) -> dict[str, Any]:
        iou = iou_per_region(pred[rows], true[rows])
        return {"n": int(rows.sum()), "iou": iou, "miou": float(np.nanmean(list(iou.values()))),
                "min_iou": float(np.nanmin(list(iou.values())))}

    result = summary(np.ones(len(pred), bool))
    result["per_style"] = {s: summary(styles == s) for s in STYLES if (styles == s).any()}
    result["targets"] = {"miou": MIOU_TARGET, "each_region": REGION_TARGET}
    result["meets_targets"] = bool(result["miou"] >= MIOU_TARGET and result["min_iou"] >= REGION_TARGET)
    return result


def train_segmenter(out_dir: str | os.PathLike, seed: int = 0, n_images: int = 12_000,
                    steps: int = 2000, batch_size: int = 32, lr: float = 3e-3,
                    n_eval: int = 1400, device: str | None = None, progress: bool = True
                    ) -> dict[str, Any]:
    """Train the segmentation judge on fresh renders of every style, evaluate, save.

    Deterministic for a seed, device and thread count. The loss is cross-entropy weighted by the
    inverse square root of each region's pixel share, so the small regions (eyes, mouth, glasses
    frames) are not drowned by the background. Writes the weights, ``segmenter.json`` (config,
    training record and the accuracy on ``n_eval`` renders from a disjoint seed range).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    train_x, train_y = render_labelled(train_seeds(seed, n_images), progress)
    share = torch.bincount(train_y.flatten().long(), minlength=len(REGIONS)).float()
    weight = (share.sum() / share.clamp(min=1)).sqrt()
    weight = (weight / weight.mean()).to(device)
    t_render = time.perf_counter() - t0
    torch.manual_seed(seed)
    net = SegmenterNet().to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 7)
    bar = tqdm(range(steps), desc="train segmenter", disable=not progress)
    running = None
    for _ in bar:
        idx = torch.randint(0, n_images, (batch_size,), generator=gen)
        x = train_x[idx].float().div(127.5).sub(1.0).to(device)
        loss = F.cross_entropy(net(x), train_y[idx].long().to(device), weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
    t_train = time.perf_counter() - t0 - t_render
    del train_x, train_y
    net.eval()
    config = {
        "format": FORMAT, "regions": list(REGIONS), "layout": LAYOUT,
        "architecture": {"channels": list(CHANNELS), "image_size": SIZE, "input_range": [-1.0, 1.0]},
        "styles": list(STYLES), "held_out_styles": list(HELD_OUT_STYLES),
        "training": {"seed": seed, "n_images": n_images, "steps": steps, "batch_size": batch_size,
                     "lr": lr, "train_seeds": [train_seeds(seed, n_images).start,
                                               train_seeds(seed, n_images).stop],
                     "device": str(device), "torch": torch.__version__,
                     "threads": torch.get_num_threads()},
    }
    segmenter = Segmenter(net, config, device)
    seeds = eval_seeds(seed, n_eval)
    eval_x, eval_y = render_labelled(seeds, progress)
    metrics = evaluate_segmenter(segmenter, eval_x, eval_y,
                                 [STYLES[i % len(STYLES)] for i in range(n_eval)])
    metrics.update({"eval_seeds": [seeds.start, seeds.stop], "n_eval": n_eval,
                    "seconds": {"render_train": round(t_render, 1), "train": round(t_train, 1),
                                "total": round(time.perf_counter() - t0, 1)}})
    config["metrics"] = metrics
    save_segmenter(net.cpu(), out_dir, config)
    return metrics


def save_masks(regions: np.ndarray, folder: str | os.PathLike) -> list[Path]:
    """Write one 0/255 PNG per region name of one region map into ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, name in enumerate(REGIONS):
        path = folder / f"{name}.png"
        Image.fromarray(((regions == k) * 255).astype(np.uint8), "L").save(path)
        written.append(path)
    return written


__all__ = ["Segmenter", "SegmenterNet", "evaluate_segmenter", "iou_per_region", "load_segmenter",
           "render_labelled", "save_masks", "train_segmenter"]
