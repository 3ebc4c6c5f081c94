"""Judges: small classifiers that read a portrait's content attributes and its rendering style.

The judges are *instruments*, not part of StyO. They are trained on labelled renders of every
style (the held-out ones included) and turn the paper's qualitative claims into numbers:

- **content fidelity**: how often the judged attributes of a (stylized) image agree with the true
  attributes of the source portrait it was made from;
- **style fidelity**: the judged probability of the target style.

One network reads everything: four convolution blocks (32-64-128-128 channels, the second with
two convolutions; BatchNorm, ReLU, 2× max-pooling) take a 64×64 RGB image in [-1, 1] down to a 4×4
map, a 256-unit layer, then one linear head per attribute (in :data:`ATTRIBUTES` order) and one over
all :data:`STYLES` (0.8 M parameters, 3.3 MB). The 4×4 map is flattened rather than averaged, so
heads can use *where* a feature is (eyes and mouth sit at known places).

Training and evaluation renders come from seed ranges that neither pretraining (seeds
``pretrain_seed * 10_000_000 + i``) nor each other use, so every reported accuracy is measured on
portraits the judges have never seen. Weights are safetensors, the rest JSON; nothing is pickled.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .attributes import ATTRIBUTES, HELD_OUT_STYLES, STYLES, validate
from .render import SIZE, render_batch, render_seed

DEFAULT_JUDGES = Path(__file__).resolve().parents[2] / "models" / "judges"
WEIGHTS_NAME = "judges.safetensors"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
FORMAT = "styo-judges"
FORMAT_VERSION = 1
CHANNELS = (32, 64, 128, 128)
DEPTH = (1, 2, 1, 1)  # convolutions per block

# Seed ranges (disjoint): pretraining renders seeds ``s * 10_000_000 + i`` for small ``s``.
SEED_STRIDE = 10_000_000  # seeds per training seed; n_images and n_eval must stay below it
TRAIN_SEED_BASE = 3_000_000_000
EVAL_SEED_BASE = 3_500_000_000
# Tests and notebooks that need "fresh" renders use seeds from here on (never trained on).
FRESH_SEED_BASE = 3_900_000_000
MAX_JUDGE_SEED = 39  # keeps train, eval and fresh ranges apart

STYLE_TARGET = 0.95  # the judges' accuracy on fresh renders (models/README.md)
ATTRIBUTE_TARGET = 0.90


def train_seed_range(seed: int, n: int) -> range:
    """Seeds of the training renders for judge seed ``seed``."""
    start = TRAIN_SEED_BASE + seed * SEED_STRIDE
    return range(start, start + n)


def eval_seed_range(seed: int, n: int) -> range:
    """Seeds of the evaluation renders for judge seed ``seed`` (disjoint from all training)."""
    start = EVAL_SEED_BASE + seed * SEED_STRIDE
    return range(start, start + n)


class JudgeNet(nn.Module):
    """Conv trunk plus one linear head per attribute and a style head.

    Block ``i`` has ``depth[i]`` 3×3 convolutions to ``channels[i]`` channels; the last one is
    followed by 2× max-pooling *before* its BatchNorm and ReLU (max-pooling commutes with ReLU,
    and normalising the pooled map costs a quarter as much on CPU).
    """

    def __init__(self, channels: Sequence[int] = CHANNELS, depth: Sequence[int] = DEPTH,
                 hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if len(channels) != len(depth):
            raise ValueError("channels and depth need one entry per block")
        layers: list[nn.Module] = []
        c_in = 3
        for c, d in zip(channels, depth, strict=True):
            for j in range(d):
                layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=False))
                if j == d - 1:
                    layers.append(nn.MaxPool2d(2))
                layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
        self.trunk = nn.Sequential(*layers)
        side = SIZE // 2 ** len(channels)
        self.neck = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in * side * side, hidden), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(values))
                                    for name, values in ATTRIBUTES.items()})
        self.style_head = nn.Linear(hidden, len(STYLES))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute name and under ``"style"``; ``x`` is (N, 3, 64, 64) in [-1, 1]."""
        h = self.neck(self.trunk(x.contiguous(memory_format=torch.channels_last)))
        out = {name: head(h) for name, head in self.heads.items()}
        out["style"] = self.style_head(h)
        return out


# ----------------------------------------------------------------------------- input handling


def to_judge_tensor(images: Any, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Turn images into a float (N, 3, 64, 64) tensor in [-1, 1].

    Accepted: a PIL image or a list of them (any mode and size); a uint8 array or tensor
    (N, H, W, 3), (N, 3, H, W) or a single (H, W, 3) / (3, H, W) image, read as 0..255; a float
    array or tensor in the same layouts, read in ``value_range``, which defaults to (0, 1) for NumPy
    arrays (the convention of PIL/diffusers ``output_type="np"``) and (-1, 1) for torch tensors
    (the convention of the VAE and of :func:`styo.data.image_to_tensor`). Other sizes are resized
    to 64×64 with antialiasing.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            return torch.zeros(0, 3, SIZE, SIZE)
        if all(isinstance(im, Image.Image) for im in images):
            arrs = [np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
                               if im.size != (SIZE, SIZE) else im.convert("RGB"))
                    for im in images]
            images = np.stack(arrs)
        else:
            images = np.stack([np.asarray(im) for im in images])
    if isinstance(images, np.ndarray):
        default_range = (0.0, 1.0)
        t = torch.from_numpy(np.ascontiguousarray(images))
    elif torch.is_tensor(images):
        default_range = (-1.0, 1.0)
        t = images.detach().cpu()
    else:
        raise TypeError(f"cannot judge images of type {type(images).__name__}; "
                        "pass PIL images, a NumPy array or a torch tensor")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(
            f"expected images of shape (N, H, W, 3) or (N, 3, H, W), got {tuple(t.shape)}"
        )
    if t.shape[1] != 3 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        x = t.float().div(127.5).sub(1.0)
    elif t.is_floating_point():
        lo, hi = value_range or default_range
        x = (t.float() - lo) / (hi - lo) * 2.0 - 1.0
    else:
        raise TypeError(f"images must be uint8 or float, got {t.dtype}")
    if x.shape[-2:] != (SIZE, SIZE):
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.clamp(-1.0, 1.0).contiguous()


# ----------------------------------------------------------------------------- the judges


class Judges:
    """A trained :class:`JudgeNet` in eval mode, with readable predictions."""

    def __init__(self, net: JudgeNet, config: dict[str, Any] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.net = net.to(self.device).eval()
        self.config = config or {}

    @torch.no_grad()
    def probabilities(self, images: Any, value_range: tuple[float, float] | None = None,
                      batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Softmax probabilities (N, n_values) per attribute and under ``"style"`` (CPU tensors)."""
        x = to_judge_tensor(images, value_range)
        keys = [*ATTRIBUTES, "style"]
        if len(x) == 0:
            sizes = [*(len(v) for v in ATTRIBUTES.values()), len(STYLES)]
            return {k: torch.zeros(0, n) for k, n in zip(keys, sizes, strict=True)}
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for i in range(0, len(x), batch_size):
            logits = self.net(x[i:i + batch_size].to(self.device))
            for k in keys:
                parts[k].append(logits[k].float().softmax(-1).cpu())
        return {k: torch.cat(v) for k, v in parts.items()}

    def predict(self, images: Any, value_range: tuple[float, float] | None = None
                ) -> list[dict[str, Any]]:
        """One dict per image: ``style`` (probability of every style), ``attributes`` (the most
        probable value of each attribute) and ``attribute_probs`` (probability of every value)."""
        probs = self.probabilities(images, value_range)
        n = len(probs["style"])
        style_p = probs["style"].tolist()
        attr_p = {name: probs[name].tolist() for name in ATTRIBUTES}
        out = []
        for i in range(n):
            aprobs = {name: dict(zip(values, attr_p[name][i], strict=True))
                      for name, values in ATTRIBUTES.items()}
            out.append({
                "style": dict(zip(STYLES, style_p[i], strict=True)),
                "attributes": {name: max(p, key=p.get) for name, p in aprobs.items()},
                "attribute_probs": aprobs,
            })
        return out

    def predict_indices(self, images: Any, value_range: tuple[float, float] | None = None
                        ) -> dict[str, torch.Tensor]:
        """Arg-max index per attribute (into ``ATTRIBUTES[name]``) and style (into ``STYLES``)."""
        return {k: p.argmax(-1) for k, p in self.probabilities(images, value_range).items()}


def _config(depth: Sequence[int], hidden: int, dropout: float,
            training: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": {"channels": list(CHANNELS), "depth": list(depth), "hidden": hidden,
                         "dropout": dropout,
                         "image_size": SIZE, "input_range": [-1.0, 1.0]},
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
        "styles": list(STYLES),
        "held_out_styles": list(HELD_OUT_STYLES),
        "training": training or {},
    }


def save_judges(net: JudgeNet, out_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write ``judges.safetensors`` (fp32 weights and BatchNorm statistics) and ``config.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / WEIGHTS_NAME)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")


def load_judges(path: str | os.PathLike | None = None,
                device: str | torch.device | None = None) -> Judges:
    """Load judges saved by :func:`train_judges` (default: the shipped ``models/judges``)."""
    folder = Path(path) if path is not None else DEFAULT_JUDGES
    weights, cfg_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    if not weights.is_file() or not cfg_file.is_file():
        missing = weights if not weights.is_file() else cfg_file
        raise FileNotFoundError(
            f"no judges at {folder} ({missing.name} is missing); train them with "
            f"`styo world train-judges --out {folder if path is not None else 'models/judges'}`"
        )
    config = json.loads(cfg_file.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{cfg_file} is not a judges config (format {config.get('format')!r})")
    stale = (config.get("attributes") != {k: list(v) for k, v in ATTRIBUTES.items()}
             or config.get("styles") != list(STYLES))
    if stale:
        raise ValueError(
            f"the judges at {folder} were trained for other attributes or styles than the "
            "renderer now has; retrain them with `styo world train-judges`"
        )
    arch = config["architecture"]
    net = JudgeNet(arch["channels"], arch["depth"], arch["hidden"], arch["dropout"])
    net.load_state_dict(load_file(str(weights)))
    return Judges(net, config, device)


def judge_files(paths: Iterable[str | os.PathLike],
                judges_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Judge image files: ``[{"path", "style": {NAME: prob}, "attributes": {ATTR: VALUE}}]``.

    Files are read with :func:`styo.data.load_image` (validated, converted to RGB, centre-cropped
    and resized to 64×64); a bad file raises its :class:`~styo.data.ImageInputError` before any
    judging is done.
    """
    from ..data import load_image

    paths = [str(p) for p in paths]
    images = [load_image(p, SIZE) for p in paths]
    judges = load_judges(judges_dir)
    preds = judges.predict(images)
    return [{"path": p, "style": r["style"], "attributes": r["attributes"]}
            for p, r in zip(paths, preds, strict=True)]


# ----------------------------------------------------------------------------- metrics


def _targets(source_attributes: dict[str, str] | Sequence[dict[str, str]], n: int
             ) -> list[dict[str, str]]:
    if isinstance(source_attributes, dict):
        return [source_attributes] * n
    targets = list(source_attributes)
    if len(targets) != n:
        raise ValueError(f"got {n} images but {len(targets)} source attribute dicts")
    return targets


def attribute_agreement(judges: Judges, images: Any,
                        source_attributes: dict[str, str] | Sequence[dict[str, str]],
                        attributes: Sequence[str] | None = None,
                        value_range: tuple[float, float] | None = None) -> dict[str, float]:
    """Per attribute, the share of images whose judged value equals the source's true value.

    ``source_attributes`` is one dict (all images come from one source) or one dict per image;
    only attributes it names are scored (and only ``attributes``, if given).
    """
    preds = judges.predict_indices(images, value_range)
    n = len(preds["style"])
    if n == 0:
        raise ValueError("no images to judge")
    targets = _targets(source_attributes, n)
    names = list(attributes) if attributes is not None else [a for a in ATTRIBUTES
                                                            if a in targets[0]]
    for t in targets:
        validate(None, {k: t[k] for k in names if k in t})
    out = {}
    for name in names:
        if name not in ATTRIBUTES:
            raise ValueError(
                f"unknown attribute {name!r}; valid attributes: {', '.join(ATTRIBUTES)}"
            )
        values = ATTRIBUTES[name]
        truth = torch.tensor([values.index(t[name]) for t in targets])
        out[name] = float((preds[name] == truth).float().mean())
    return out


def content_fidelity(judges: Judges, images: Any,
                     source_attributes: dict[str, str] | Sequence[dict[str, str]],
                     attributes: Sequence[str] | None = None,
                     value_range: tuple[float, float] | None = None) -> float:
    """Mean over images and attributes of (judged attribute == source's true attribute), in [0, 1].

    Pass ``attributes`` to score a subset (e.g. everything but ``background``).
    """
    agreement = attribute_agreement(judges, images, source_attributes, attributes, value_range)
    return float(np.mean(list(agreement.values())))


def style_fidelity(judges: Judges, images: Any, style: str,
                   value_range: tuple[float, float] | None = None) -> float:
    """Mean judged probability of ``style`` over the images, in [0, 1]."""
    validate(style, {})
    probs = judges.probabilities(images, value_range)["style"]
    if len(probs) == 0:
        raise ValueError("no images to judge")
    return float(probs[:, STYLES.index(style)].mean())


# ----------------------------------------------------------------------------- training


def _labels(styles: list[str], attrs: list[dict[str, str]]) -> torch.Tensor:
    """(N, n_attributes + 1) int64: value index per attribute in order, then the style index."""
    rows = [[ATTRIBUTES[k].index(a[k]) for k in ATTRIBUTES] + [STYLES.index(s)]
            for s, a in zip(styles, attrs, strict=True)]
    return torch.tensor(rows, dtype=torch.long)


def _render_labelled(seeds: range, desc: str, chunk: int = 1000, balanced: bool = False,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, 64, 64) images and labels of ``seeds``.

    Styles are drawn per seed from all :data:`STYLES`; with ``balanced`` they cycle instead
    (seed ``i`` of the range gets style ``i % len(STYLES)``), giving equal counts per style.
    """
    images = torch.empty(len(seeds), 3, SIZE, SIZE, dtype=torch.uint8)
    labels = torch.empty(len(seeds), len(ATTRIBUTES) + 1, dtype=torch.long)
    bar = tqdm(total=len(seeds), desc=desc, unit="img", disable=not progress, mininterval=2.0)
    for start in range(0, len(seeds), chunk):
        part = seeds[start:start + chunk]
        if balanced:
            arrs, styles, attrs = [], [], []
            for j, s in enumerate(part):
                img, st, a = render_seed(s, style=STYLES[(start + j) % len(STYLES)])
                arrs.append(np.asarray(img))
                styles.append(st)
                attrs.append(a)
            arr = np.stack(arrs)
        else:
            arr, styles, attrs = render_batch(part, styles=STYLES)
        images[start:start + len(part)] = torch.from_numpy(arr).permute(0, 3, 1, 2)
        labels[start:start + len(part)] = _labels(styles, attrs)
        bar.update(len(part))
    bar.close()
    return images, labels


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` px in x and y (edges replicated)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    off = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(off[i, 0]), int(off[i, 1])
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(127.5).sub_(1.0)


@torch.no_grad()
def evaluate(judges: Judges, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy of style and of every attribute, overall and per true style.

    ``images`` is uint8 (N, 3, 64, 64); ``labels`` as made by :func:`_labels`.
    """
    preds = judges.predict_indices(images)
    names = [*ATTRIBUTES, "style"]
    correct = torch.stack([preds[k] == labels[:, i] for i, k in enumerate(names)], 1).float()
    true_style = labels[:, -1]

    def summary(mask: torch.Tensor) -> dict[str, Any]:
        acc = correct[mask].mean(0).tolist()
        attr = dict(zip(ATTRIBUTES, acc[:-1], strict=True))
        return {"n": int(mask.sum()), "style_accuracy": acc[-1], "attribute_accuracy": attr,
                "mean_attribute_accuracy": float(np.mean(acc[:-1])),
                "min_attribute_accuracy": float(np.min(acc[:-1]))}

    result = summary(torch.ones(len(labels), dtype=torch.bool))
    result["per_style"] = {s: summary(true_style == i) for i, s in enumerate(STYLES)
                           if bool((true_style == i).any())}
    confusion = torch.zeros(len(STYLES), len(STYLES), dtype=torch.long)
    for t, p in zip(true_style.tolist(), preds["style"].tolist(), strict=True):
        confusion[t, p] += 1
    result["style_confusion"] = {"rows_true_cols_judged": list(STYLES),
                                 "counts": confusion.tolist()}
    result["meets_targets"] = bool(result["style_accuracy"] >= STYLE_TARGET
                                   and result["min_attribute_accuracy"] >= ATTRIBUTE_TARGET)
    result["targets"] = {"style": STYLE_TARGET, "each_attribute": ATTRIBUTE_TARGET}
    return result


def train_judges(
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_images: int = 40_000,
    epochs: int = 6,
    device: str | None = None,
    batch_size: int = 256,
    n_eval: int = 7_000,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    max_shift: int = 2,
    depth: Sequence[int] = DEPTH,
    hidden: int = 256,
    dropout: float = 0.1,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the judges on fresh renders of every style, evaluate them, save them to ``out_dir``.

    Deterministic for a given ``seed`` on a given device and thread count: renders, weight init,
    shuffling, augmentation shifts and dropout all come from seeded generators. Writes
    ``judges.safetensors``, ``config.json`` and ``metrics.json`` (accuracy on ``n_eval`` renders,
    balanced over styles, from a seed range disjoint from training and pretraining) and returns
    the metrics dict.
    """
    if not 0 < n_images < SEED_STRIDE or not 0 < n_eval < SEED_STRIDE:
        raise ValueError(f"n_images and n_eval must be in 1..{SEED_STRIDE - 1}")
    if epochs <= 0 or batch_size <= 0:
        raise ValueError("epochs and batch_size must be positive")
    if not 0 <= seed <= MAX_JUDGE_SEED:
        raise ValueError(f"seed must be in 0..{MAX_JUDGE_SEED} (keeps the judges' training, "
                         "evaluation and test seed ranges apart)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()

    train_x, train_y = _render_labelled(train_seed_range(seed, n_images), "render train",
                                        progress=progress)
    t_render = time.perf_counter() - t0

    torch.manual_seed(seed)  # dropout draws come from the global generator
    init_gen = torch.Generator().manual_seed(seed * 1_000_003 + 1)
    net = JudgeNet(CHANNELS, depth, hidden, dropout)
    with torch.no_grad():  # explicit seeded init, independent of global RNG state
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=init_gen)
                               * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
    net.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n_images / batch_size)
    total = steps_per_epoch * epochs
    warmup = max(1, min(100, total // 10))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    shuffle_gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)
    aug_gen = torch.Generator().manual_seed(seed * 1_000_003 + 3)
    names = [*ATTRIBUTES, "style"]
    history = []
    bar = tqdm(total=total, desc="train judges", unit="step", disable=not progress)
    for epoch in range(epochs):
        order = torch.randperm(n_images, generator=shuffle_gen)
        run_loss, run_n = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x = _shift(_to_float(train_x[idx]), max_shift, aug_gen).to(device)
            y = train_y[idx].to(device)
            logits = net(x)
            loss = sum(F.cross_entropy(logits[k], y[:, i]) for i, k in enumerate(names))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * len(idx)
            run_n += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{run_loss / run_n:.3f}")
        history.append({"epoch": epoch + 1, "train_loss": run_loss / run_n})
    bar.close()
    t_train = time.perf_counter() - t0 - t_render
    del train_x, train_y

    net.eval()
    training = {
        "seed": seed, "n_images": n_images, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "weight_decay": weight_decay, "max_shift": max_shift,
        "train_seeds": [train_seed_range(seed, n_images).start,
                        train_seed_range(seed, n_images).stop],
        "styles": list(STYLES), "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "history": history,
    }
    judges = Judges(net, _config(depth, hidden, dropout, training), device)
    eval_seeds = eval_seed_range(seed, n_eval)
    eval_x, eval_y = _render_labelled(eval_seeds, "render eval", balanced=True, progress=progress)
    metrics = evaluate(judges, eval_x, eval_y)
    metrics.update({
        "eval_seeds": [eval_seeds.start, eval_seeds.stop],
        "eval_styles": "balanced: seed i of the range in STYLES[i % len(STYLES)]",
        "n_eval": n_eval,
        "seconds": {"render_train": round(t_render, 1), "train": round(t_train, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "training": {k: v for k, v in training.items() if k != "history"} | {"history": history},
    })
    net.cpu()
    save_judges(net, out_dir, judges.config)
    (Path(out_dir) / METRICS_NAME).write_text(json.dumps(metrics, indent=1) + "\n")
    net.to(device)
    return metrics


__all__ = [
    "DEFAULT_JUDGES", "FRESH_SEED_BASE", "MAX_JUDGE_SEED", "JudgeNet", "Judges",
    "attribute_agreement",
    "content_fidelity", "evaluate", "judge_files", "load_judges", "save_judges", "style_fidelity",
    "to_judge_tensor", "train_judges",
]
