"""``styo world ...``: the miniature world's commands (render, judge, pretrain, evaluate, ...).

Each handler checks its arguments (a bad one is a :class:`~styo.cli.errors.UsageError`) before it
imports the world's heavy modules, so a typo costs a second, not a model load.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection, Sequence
from pathlib import Path

from .errors import UsageError


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects ATTR=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def cmd_world_styles(args: argparse.Namespace) -> int:
    from ..world.attributes import HELD_OUT_STYLES, STYLES

    for style in STYLES:
        print(f"{style} (held out)" if style in HELD_OUT_STYLES else style)
    return 0


def cmd_world_render(args: argparse.Namespace) -> int:
    from ..world.attributes import validate
    from ..world.render import render_seed_regions
    from ..world.segmenter import save_masks

    overrides = _parse_sets(args.set or [])
    try:
        validate(args.style, overrides)
    except ValueError as err:
        raise UsageError(str(err)) from err
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; choose another --out (or pass --force to replace it)")
    masks = Path(args.masks) if args.masks else None
    if masks is not None and masks.exists() and any(masks.iterdir()) and not args.force:
        raise UsageError(f"--masks {masks} is not empty; choose a new folder (or pass --force)")
    image, regions, style, attributes = render_seed_regions(
        args.seed, style=args.style, overrides=overrides, layout=args.layout)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    if masks is not None:
        save_masks(regions, masks)
    if args.json:
        print(json.dumps({"style": style, "attributes": attributes}))
    return 0


def cmd_world_judge(args: argparse.Namespace) -> int:
    from ..data import ImageInputError
    from ..world.judges import judge_files

    masks = Path(args.masks) if args.masks else None
    if masks is not None:
        stems = [Path(f).stem for f in args.files]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise UsageError(f"--masks needs distinct file names; {', '.join(twice)} occurs twice")
        taken = [s for s in stems if (masks / s).exists()]
        if taken:
            raise UsageError(f"--masks {masks} already holds {', '.join(taken)}; choose a new folder")
    try:
        results = judge_files(args.files, judges_dir=args.judges)
        if masks is not None:
            _write_judged_masks(args.files, masks, args.judges)
    except ImageInputError as err:
        raise UsageError(str(err)) from err
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            style = max(r["style"], key=r["style"].get)
            attrs = " ".join(f"{k}={v}" for k, v in r["attributes"].items())
            print(f"{r['path']}: style={style} ({r['style'][style]:.2f}) {attrs}")
    return 0


def _write_judged_masks(files: Sequence[str], folder: Path, judges_dir: str | None) -> None:
    """The segmentation judge's region masks of each file, in ``folder/<file stem>/<region>.png``."""
    from ..data import load_image
    from ..world.render import SIZE
    from ..world.segmenter import load_segmenter, save_masks

    images = [load_image(f, SIZE) for f in files]
    for f, regions in zip(files, load_segmenter(judges_dir).regions(images), strict=True):
        save_masks(regions, folder / Path(f).stem)


def cmd_world_train_segmenter(args: argparse.Namespace) -> int:
    from ..world.segmenter import train_segmenter

    if args.n_images <= 0 or args.steps <= 0:
        raise UsageError("--n-images and --steps must be positive")
    m = train_segmenter(args.out, seed=args.seed, n_images=args.n_images, steps=args.steps,
                        device=args.device)
    ious = " ".join(f"{k}={v:.3f}" for k, v in m["iou"].items())
    print(f"segmentation judge: mIoU {m['miou']:.3f} ({ious}) on {m['n_eval']} fresh renders; "
          f"saved to {args.out}")
    return 0


def _measure_out_dir(args: argparse.Namespace) -> Path:
    """The --out folder of a command that measures a base model, once its options are checked."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose a new --out folder")
    if args.n <= 0 or args.steps <= 0:
        raise UsageError("--n and --steps must be positive")
    return out


def _model_and_unseen_combinations(args: argparse.Namespace):
    """The pipeline of --model and the --n caption combinations no pretraining image has."""
    from ..pipeline import load_pipeline
    from ..world.evaluate import heldout_combinations, training_combinations

    pipe = load_pipeline(args.model, device=args.device)
    return pipe, heldout_combinations(args.n, training_combinations(args.n_train), seed=args.seed)


def _save_measurement(out: Path, result: dict, name: str) -> None:
    """The first 49 pictures as samples.png and the figures as ``name`` in a new folder."""
    from ..book.viz import image_grid

    out.mkdir(parents=True, exist_ok=True)
    image_grid(result.pop("images")[:49], cols=7, scale=2).save(out / "samples.png")
    (out / name).write_text(json.dumps(result, indent=1))


def cmd_world_grounding(args: argparse.Namespace) -> int:
    """Where each word's cross-attention lands on the model's own pictures, and how peaked it is."""
    out = _measure_out_dir(args)
    from ..sharpness import attention_sharpness
    from ..world.captions import plain_caption
    from ..world.evaluate import evaluate_grounding
    from ..world.segmenter import load_segmenter

    segmenter = load_segmenter(args.judges)
    pipe, combos = _model_and_unseen_combinations(args)
    result = evaluate_grounding(pipe, segmenter, combos, steps=args.steps,
                                guidance=args.guidance, seed=args.seed)
    prompts = [plain_caption(s, a) for s, a in combos]
    result["sharpness"] = attention_sharpness(pipe, prompts[:24], num_inference_steps=10,
                                              seed=args.seed)
    result["model"] = str(args.model)
    result["n_train"] = args.n_train  # the combinations excluded: with --seed, they fix the prompts
    _save_measurement(out, result, "grounding.json")
    per = " ".join(f"{k}={v:.2f}" for k, v in result["miou_per_target"].items())
    sharp = result["sharpness"]
    print(f"word-map mIoU {result['miou']:.3f} by DAAM's protocol (lowest {result['min_target_miou']:.3f}; "
          f"{per}; every layer as the figure: {result['all_layers']['miou']:.3f}) on "
          f"{result['n']} unseen combinations; padding mass {sharp['padding_mass']:.3f}, "
          f"entropy {sharp['entropy']:.3f}, head centre spread x {result['head_centre_std_px']['x']:.1f} "
          f"y {result['head_centre_std_px']['y']:.1f} px")
    return 0


def _named_weights(items: list[str], option: str, names: Collection[str], what: str) -> dict[str, float]:
    """``["eyes=4", "mouth=2"]`` as ``{"eyes": 4.0, "mouth": 2.0}``, each name one of ``names``
    and each weight a number >= 0, or a UsageError naming the option, ``what`` it takes and the item."""
    out: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if name not in names or not weight >= 0:
            raise UsageError(f"{option} takes {what}=W with {what} {_NAMES_HELP[option]} and W >= 0, got {item!r}")
        out[name] = weight
    return out


_NAMES_HELP = {
    "--threshold-region-weight": "one of hair eyes mouth glasses face background head",
    "--threshold-word-weight": "a word captions ground (an attribute value, its noun, glasses or portrait)",
}


def cmd_world_pretrain(args: argparse.Namespace) -> int:
    from ..world.grounding import WORD_TARGETS, grounded_vocabulary
    from ..world.people import NAMES
    from ..world.pretrain import PretrainConfig, adopt_vae, pretrain, trained_parameter_names

    cfg = PretrainConfig(seed=args.seed)
    for name in (
        "n_images",
        "vae_images",
        "vae_steps",
        "vae_polish_steps",
        "vae_texture_steps",
        "unet_steps",
        "unet_batch",
        "vae_batch",
        "checkpoint_every",
    ):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name in ("vae_polish_steps", "vae_texture_steps") else 1):
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
            setattr(cfg, name, value)
    for name in ("unet_lr", "ema_decay", "grounding_weight", "threshold_weight", "padding_weight",
                 "padding_allowance", "detail_weight"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {value}")
            setattr(cfg, name, value)
    if args.warmup is not None:
        cfg.warmup = args.warmup
    if args.threshold_at_picture:
        if not cfg.threshold_weight:
            raise UsageError("--threshold-at-picture scores the threshold loss: give --threshold-weight too")
        cfg.threshold_at_picture = True
    if args.threshold_temperature is not None:
        if not args.threshold_temperature > 0:
            raise UsageError(f"--threshold-temperature must be positive, got {args.threshold_temperature}")
        cfg.threshold_temperature = args.threshold_temperature
    if args.threshold_region_weight:
        if not cfg.threshold_weight:
            raise UsageError("--threshold-region-weight weights the threshold loss: give --threshold-weight too")
        cfg.threshold_region_weights = _named_weights(args.threshold_region_weight, "--threshold-region-weight",
                                                      WORD_TARGETS, "REGION")
    if args.threshold_word_weight:
        if not cfg.threshold_weight:
            raise UsageError("--threshold-word-weight weights the threshold loss: give --threshold-weight too")
        cfg.threshold_word_weights = _named_weights(args.threshold_word_weight, "--threshold-word-weight",
                                                    grounded_vocabulary(), "WORD")
    if args.people is not None:
        if not 0 <= args.people <= len(NAMES):
            raise UsageError(f"--people must be 0 to {len(NAMES)} (the names of the cast), got {args.people}")
        cfg.people = args.people
    if args.people_images is not None:
        if args.people_images < 1:
            raise UsageError(f"--people-images must be positive, got {args.people_images}")
        cfg.people_images = args.people_images
    if args.people_share is not None:
        if not 0 <= args.people_share < 1:
            raise UsageError(f"--people-share must be at least 0 and below 1, got {args.people_share}")
        cfg.people_share = args.people_share
    if args.name_lr is not None:
        if not args.name_lr > 0:
            raise UsageError(f"--name-lr must be positive, got {args.name_lr}")
        cfg.name_lr = args.name_lr
    cfg.draw_seed = args.draw_seed
    cfg.layout = args.layout
    if args.init_from is not None:
        if not (Path(args.init_from) / "model_index.json").exists():
            raise UsageError(f"--init-from {args.init_from} holds no pipeline (model_index.json); "
                             "give a folder written by `styo world pretrain`, e.g. models/styo-mini")
        cfg.init_from = str(args.init_from)
    if args.train_only:
        if cfg.init_from is None:
            raise UsageError("--train-only continues a finished model: give --init-from too")
        from ..world.architecture import build_unet

        try:
            trained_parameter_names(build_unet(), tuple(args.train_only))
        except ValueError as e:
            raise UsageError(f"--train-only: {e}") from e
        cfg.train_only = tuple(args.train_only)
    out = Path(args.out)
    if (out / "model_index.json").exists():
        raise UsageError(f"{out} already holds a pipeline; choose another --out")
    work = Path(args.work_dir) if args.work_dir else Path("runs") / "pretrain"
    if args.workers is not None and args.workers <= 0:
        raise UsageError(f"--workers must be positive, got {args.workers}")
    if args.vae is not None:  # checked here, so a bad --vae is a usage error, not a traceback
        try:
            work.mkdir(parents=True, exist_ok=True)
            adopt_vae(args.vae, work)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from e
    pretrain(out, work, cfg, device=args.device, workers=args.workers, vae_dir=args.vae)
    print(f"saved pipeline to {out}")
    return 0


def cmd_world_snapshot(args: argparse.Namespace) -> int:
    from ..world.pretrain import snapshot

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose a new --out folder")
    try:
        step = snapshot(args.work_dir, out)
    except FileNotFoundError as e:
        raise UsageError(f"{e}; point --work-dir at a running or stopped pretraining") from e
    print(f"saved the EMA weights of step {step} as a pipeline in {out}")
    return 0


def cmd_world_sharpen_decoder(args: argparse.Namespace) -> int:
    out, model = Path(args.out), Path(args.model)
    if out.exists():
        raise UsageError(f"{out} already exists; choose a new --out folder")
    if not (model / "vae").is_dir():
        raise UsageError(f"{model} has no vae/ folder; give a pipeline folder such as models/styo-mini")
    import torch

    from ..world.decoder_detail import DecoderDetailConfig, sharpen_decoder

    given = {"steps": args.steps, "part_weight": args.part_weight}
    try:
        cfg = DecoderDetailConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise UsageError(f"{e}; see styo world sharpen-decoder --help") from e
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        sharpen_decoder(model, out, args.work_dir, cfg, device)
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(f"saved {model} with its decoder sharpened ({cfg.steps} steps, part weight "
          f"{cfg.part_weight:g}) to {out}")
    return 0


def cmd_world_train_judges(args: argparse.Namespace) -> int:
    from ..world.judges import train_judges

    out = Path(args.out)
    train_judges(
        out, seed=args.seed, n_images=args.n_images, epochs=args.epochs, device=args.device
    )
    print(f"saved judges to {out}")
    return 0


def cmd_world_evaluate(args: argparse.Namespace) -> int:
    """The model card's quality figures: captioned style/attributes on unseen combinations."""
    out = _measure_out_dir(args)
    from ..world.evaluate import codec_report, evaluate_base_model
    from ..world.judges import load_judges

    judges = load_judges(args.judges)
    pipe, combos = _model_and_unseen_combinations(args)
    result = evaluate_base_model(
        pipe, judges, combos, steps=args.steps, guidance=args.guidance, seed=args.seed
    )
    result["n_train"] = args.n_train  # the combinations excluded: with --seed, they fix the prompts
    result["codec"] = codec_report(pipe.vae, judges)
    _save_measurement(out, result, "metrics.json")
    attrs = " ".join(f"{k}={v:.2f}" for k, v in result["attribute_accuracy"].items())
    print(f"style accuracy {result['style_accuracy']:.3f}, mean attribute accuracy "
          f"{result['mean_attribute_accuracy']:.3f} ({attrs}) on {result['n']} unseen combinations")
    per_style = " ".join(f"{k}={v['style_accuracy']:.2f}/{v['mean_attribute_accuracy']:.2f}"
                         for k, v in result["per_style"].items())
    print(f"per captioned style, style / mean attribute accuracy: {per_style}")
    codec = " ".join(f"{k}={v['mse']:.4f}/{v['judged_style_accuracy']:.2f}"
                     for k, v in result["codec"]["per_style"].items())
    print(f"VAE reconstruction MSE / judged style accuracy per style: {codec}")
    kept = " ".join(f"{n}={result['codec']['attributes_rendered'][n]:.2f}/{v:.2f}"
                    for n, v in result["codec"]["attributes_reconstructed"].items())
    print(f"attributes judged in renders / in their reconstructions: {kept}")
    return 0
