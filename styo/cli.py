"""The ``styo`` command line: ``styo world ...`` (the miniature world), ``styo stylize``, ``styo attention``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input. Errors are one plain line
(``styo: error: ...``); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .profiles import PROFILES


class UsageError(Exception):
    """Bad input from the user: exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like every other styo error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"styo: error: {message} (see `{self.prog} --help`)\n")


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects ATTR=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def cmd_world_styles(args: argparse.Namespace) -> int:
    from .world.attributes import HELD_OUT_STYLES, STYLES

    for style in STYLES:
        print(f"{style} (held out)" if style in HELD_OUT_STYLES else style)
    return 0


def cmd_world_render(args: argparse.Namespace) -> int:
    from .world.attributes import validate
    from .world.render import render_seed_regions
    from .world.segmenter import save_masks

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
    from .data import ImageInputError
    from .world.judges import judge_files

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
    from .data import load_image
    from .world.render import SIZE
    from .world.segmenter import load_segmenter, save_masks

    images = [load_image(f, SIZE) for f in files]
    for f, regions in zip(files, load_segmenter(judges_dir).regions(images), strict=True):
        save_masks(regions, folder / Path(f).stem)


def cmd_world_train_segmenter(args: argparse.Namespace) -> int:
    from .world.segmenter import train_segmenter

    if args.n_images <= 0 or args.steps <= 0:
        raise UsageError("--n-images and --steps must be positive")
    m = train_segmenter(args.out, seed=args.seed, n_images=args.n_images, steps=args.steps,
                        device=args.device)
    ious = " ".join(f"{k}={v:.3f}" for k, v in m["iou"].items())
    print(f"segmentation judge: mIoU {m['miou']:.3f} ({ious}) on {m['n_eval']} fresh renders; "
          f"saved to {args.out}")
    return 0


def cmd_world_grounding(args: argparse.Namespace) -> int:
    """Where each word's cross-attention lands on the model's own pictures, and how peaked it is."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose a new --out folder")
    if args.n <= 0 or args.steps <= 0:
        raise UsageError("--n and --steps must be positive")
    from .pipeline import load_pipeline
    from .sharpness import attention_sharpness
    from .viz import image_grid
    from .world.captions import plain_caption
    from .world.evaluate import evaluate_grounding, heldout_combinations, training_combinations
    from .world.segmenter import load_segmenter

    segmenter = load_segmenter(args.judges)
    pipe = load_pipeline(args.model, device=args.device)
    combos = heldout_combinations(args.n, training_combinations(args.n_train), seed=args.seed)
    result = evaluate_grounding(pipe, segmenter, combos, steps=args.steps,
                                guidance=args.guidance, seed=args.seed)
    prompts = [plain_caption(s, a) for s, a in combos]
    result["sharpness"] = attention_sharpness(pipe, prompts[:24], num_inference_steps=10,
                                              seed=args.seed)
    result["model"] = str(args.model)
    out.mkdir(parents=True, exist_ok=True)
    image_grid(result.pop("images")[:49], cols=7, scale=2).save(out / "samples.png")
    (out / "grounding.json").write_text(json.dumps(result, indent=1))
    per = " ".join(f"{k}={v:.2f}" for k, v in result["miou_per_target"].items())
    sharp = result["sharpness"]
    print(f"word-map mIoU {result['miou']:.3f} (lowest {result['min_target_miou']:.3f}; {per}) on "
          f"{result['n']} unseen combinations; padding mass {sharp['padding_mass']:.3f}, "
          f"entropy {sharp['entropy']:.3f}, head centre spread x {result['head_centre_std_px']['x']:.1f} "
          f"y {result['head_centre_std_px']['y']:.1f} px")
    return 0


def cmd_world_pretrain(args: argparse.Namespace) -> int:
    from .world.pretrain import PretrainConfig, adopt_vae, pretrain

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
    for name in ("unet_lr", "ema_decay", "grounding_weight", "padding_weight", "padding_allowance"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {value}")
            setattr(cfg, name, value)
    if args.warmup is not None:
        cfg.warmup = args.warmup
    cfg.draw_seed = args.draw_seed
    cfg.layout = args.layout
    if args.init_from is not None:
        if not (Path(args.init_from) / "model_index.json").exists():
            raise UsageError(f"--init-from {args.init_from} holds no pipeline (model_index.json); "
                             "give a folder written by `styo world pretrain`, e.g. models/styo-mini")
        cfg.init_from = str(args.init_from)
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
    from .world.pretrain import snapshot

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose a new --out folder")
    try:
        step = snapshot(args.work_dir, out)
    except FileNotFoundError as e:
        raise UsageError(f"{e}; point --work-dir at a running or stopped pretraining") from e
    print(f"saved the EMA weights of step {step} as a pipeline in {out}")
    return 0


def cmd_world_train_judges(args: argparse.Namespace) -> int:
    from .world.judges import train_judges

    out = Path(args.out)
    train_judges(
        out, seed=args.seed, n_images=args.n_images, epochs=args.epochs, device=args.device
    )
    print(f"saved judges to {out}")
    return 0


def cmd_world_evaluate(args: argparse.Namespace) -> int:
    """The model card's quality figures: captioned style/attributes on unseen combinations."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose a new --out folder")
    if args.n <= 0 or args.steps <= 0:
        raise UsageError("--n and --steps must be positive")
    from .pipeline import load_pipeline
    from .viz import image_grid
    from .world.evaluate import (
        codec_report,
        evaluate_base_model,
        heldout_combinations,
        training_combinations,
    )
    from .world.judges import load_judges

    judges = load_judges(args.judges)
    pipe = load_pipeline(args.model, device=args.device)
    combos = heldout_combinations(args.n, training_combinations(args.n_train), seed=args.seed)
    result = evaluate_base_model(
        pipe, judges, combos, steps=args.steps, guidance=args.guidance, seed=args.seed
    )
    result["n_train"] = args.n_train  # the combinations excluded: with --seed, they fix the prompts
    result["codec"] = codec_report(pipe.vae, judges)
    out.mkdir(parents=True, exist_ok=True)
    image_grid(result.pop("images")[:49], cols=7, scale=2).save(out / "samples.png")
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    attrs = " ".join(f"{k}={v:.2f}" for k, v in result["attribute_accuracy"].items())
    print(f"style accuracy {result['style_accuracy']:.3f}, mean attribute accuracy "
          f"{result['mean_attribute_accuracy']:.3f} ({attrs}) on {result['n']} unseen combinations")
    per_style = " ".join(f"{k}={v['style_accuracy']:.2f}/{v['mean_attribute_accuracy']:.2f}"
                         for k, v in result["per_style"].items())
    print(f"per captioned style, style / mean attribute accuracy: {per_style}")
    codec = " ".join(f"{k}={v['mse']:.4f}/{v['judged_style_accuracy']:.2f}"
                     for k, v in result["codec"]["per_style"].items())
    print(f"VAE reconstruction MSE / judged style accuracy per style: {codec}")
    return 0


def cmd_stylize(args: argparse.Namespace) -> int:
    from .stylize_job import cmd_stylize as job

    return job(args)


def cmd_attention(args: argparse.Namespace) -> int:
    from .attention_job import cmd_attention as job

    return job(args)


def _add_common(p: argparse.ArgumentParser) -> None:
    """Options every model-running command has; --debug also after the subcommand."""
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks and library warnings")


MODEL_HELP = ("diffusers pipeline folder or hub id (default: the miniature world's model in "
              "models/styo-mini)")


def _by_model(key: str) -> str:
    """'(model: MINI / SD)': a default that depends on the model, as styo.profiles sets it."""
    def shown(value) -> str:
        return ("yes" if value else "no") if isinstance(value, bool) else f"{value:g}"

    return f"(model: {shown(PROFILES['mini'][key])} / {shown(PROFILES['sd'][key])})"


def add_stylize_parser(sub) -> None:
    p = sub.add_parser(
        "stylize",
        help="stylise a face like a style image (IDL fine-tuning, then FCC sampling)",
        description="Fine-tune the model on the source face and the target style (IDL), then "
        "stylise the source (FCC). Writes DIR/stylized.png (more samples: stylized-1.png, ...), "
        "DIR/reconstruction.png, DIR/run.json and IDL's checkpoints and pipeline in DIR/idl. "
        "Defaults marked (model) are the miniature world's for the default model and the "
        "paper's Stable Diffusion settings for any other.",
    )
    p.add_argument("--source", required=True, metavar="FILE", help="the face to stylise")
    p.add_argument("--target", required=True, metavar="FILE", help="one image in the style")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--model", help=MODEL_HELP)
    aux = p.add_mutually_exclusive_group()
    aux.add_argument("--aux-dir", metavar="DIR", help="folder of auxiliary portraits")
    aux.add_argument("--aux", type=int, metavar="N",
                     help="generate N auxiliary portraits with the base model " + _by_model("aux"))
    p.add_argument("--no-aux", action="store_true", help="ablation: train without an aux set")
    p.add_argument("--steps", type=int, help="IDL training steps " + _by_model("steps"))
    p.add_argument("--lr", type=float, help="IDL learning rate " + _by_model("lr"))
    p.add_argument("--batch-size", type=int, default=1, help="noise samples per loss term")
    p.add_argument("--prompts", choices=("contrastive", "positive"), default="contrastive",
                   help="contrastive templates (with 'not [..]') or the positive-only ablation")
    p.add_argument("--identifiers", nargs=4, metavar=("S_SRC", "S_TGT", "C_SRC", "C_TGT"),
                   help="the four rare words (default: ak47 aug sks m4a1)")
    p.add_argument("--augment-training", action="store_true",
                   help="also repeat the phrases n_s/n_c times in the IDL prompts")
    p.add_argument("--train-text-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="IDL fine-tunes the text encoder too " + _by_model("train_text_encoder"))
    p.add_argument("--lora-rank", type=int, help="train LoRA adapters of this rank (UNet only)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="IDL checkpoint interval in steps (0: only on Ctrl-C; default 100)")
    p.add_argument("--resume", action="store_true", help="finish the run in --out")
    p.add_argument("--n-s", type=int, default=3, help="style phrase repeats, 1..5 (default 3)")
    p.add_argument("--n-c", type=int, default=1, help="content phrase repeats, 1..5 (default 1)")
    p.add_argument("--no-fcc", action="store_true", help="ablation: sample without FCC")
    p.add_argument("--samples", type=int, default=1, help="stylised images (default 1)")
    p.add_argument("--sample-steps", type=int, help="DDIM steps " + _by_model("sample_steps"))
    p.add_argument("--guidance", type=float, help="classifier-free guidance " + _by_model("guidance"))
    p.add_argument("--strength", type=float,
                   help="how deep the source is diffused, in (0, 1] " + _by_model("strength"))
    p.add_argument("--control-steps", type=float, nargs=2, default=(0.0, 1.0),
                   metavar=("START", "END"),
                   help="fractions of the sampling steps under FCC (default 0 1: all)")
    _add_common(p)
    p.set_defaults(func=cmd_stylize)


def add_attention_parser(sub) -> None:
    p = sub.add_parser(
        "attention",
        help="per-word cross-attention heat maps of one generated image",
        description="Generate an image from a prompt with cross-attention recording on and "
        "write a figure: the image and one heat map per word. --model may also be a "
        "`styo stylize` output folder (its fine-tuned pipeline is used).",
    )
    p.add_argument("--model", help=MODEL_HELP + " or a stylize output folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", metavar="FILE.png", help="the figure (never replaced)")
    p.add_argument("--maps", metavar="DIR",
                   help="also (or instead) write DIR/image.png and DIR/<word>.png per word: its heat "
                        "map at the image's size, 8-bit grey scaled to its own maximum, all layers "
                        "and steps (a new or empty folder)")
    p.add_argument("--words", nargs="+", help="words of the prompt to map (default: every word)")
    p.add_argument("--steps", type=int, help="sampling steps " + _by_model("sample_steps"))
    p.add_argument("--guidance", type=float, help="classifier-free guidance " + _by_model("guidance"))
    _add_common(p)
    p.set_defaults(func=cmd_attention)


def _add_measure_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that measure a base model on unseen caption combinations."""
    p.add_argument("--n", type=int, default=120, help="unseen (style, attributes) combinations")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=40_000, help="pretraining images to exclude")
    p.add_argument("--device")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="styo", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    add_stylize_parser(sub)
    add_attention_parser(sub)

    world = sub.add_parser("world", help="the miniature world: renderer, base model, judges")
    wsub = world.add_subparsers(dest="world_command", required=True)

    p = wsub.add_parser("styles", help="list rendering styles")
    p.set_defaults(func=cmd_world_styles)

    p = wsub.add_parser("render", help="render one procedural portrait")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--style")
    p.add_argument("--set", action="append", metavar="ATTR=VALUE", help="fix an attribute")
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true", help="print style and attributes as JSON")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--layout", choices=("centred", "varied"), default="centred",
                   help="head placement drawn from the seed: centred (a pixel or two) or varied "
                        "(several pixels, ±15%% scale, a few degrees of tilt)")
    p.add_argument("--masks", metavar="DIR",
                   help="also write the region masks: DIR/<region>.png for background body face "
                        "hair eyes mouth glasses, 0/255, the image's size")
    p.set_defaults(func=cmd_world_render)

    p = wsub.add_parser("judge", help="read style and attributes of images with the judges")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p.add_argument("--judges", help="judges folder (default: the shipped judges)")
    p.add_argument("--masks", metavar="DIR",
                   help="also write the segmentation judge's masks: DIR/<file stem>/<region>.png "
                        "for background body face hair eyes mouth glasses, 0/255, 64x64")
    p.set_defaults(func=cmd_world_judge)

    p = wsub.add_parser("pretrain", help="train the miniature base model from scratch (resumable)")
    p.add_argument("--out", required=True, help="folder for the diffusers pipeline")
    p.add_argument("--work-dir", help="checkpoints and caches (default runs/pretrain)")
    p.add_argument("--workers", type=int, help="processes that render and batch (default: all cores)")
    p.add_argument("--vae", help="start from this finished VAE folder (e.g. models/styo-mini-vae)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    for name in (
        "n-images",
        "vae-images",
        "vae-steps",
        "vae-polish-steps",
        "vae-texture-steps",
        "unet-steps",
        "unet-batch",
        "vae-batch",
        "checkpoint-every",
        "warmup",
    ):
        p.add_argument(f"--{name}", type=int)
    for name in ("unet-lr", "ema-decay"):
        p.add_argument(f"--{name}", type=float)
    p.add_argument("--layout", choices=("centred", "varied"), default="centred",
                   help="head placement of the caption data: centred (the first base model) or "
                        "varied (position, scale and tilt come from the seed)")
    p.add_argument("--grounding-weight", type=float,
                   help="weight of the loss that puts each word's cross-attention on its region "
                        "(default 0: none)")
    p.add_argument("--padding-weight", type=float,
                   help="weight of the attention mass on padding after the end token (default 0)")
    p.add_argument("--padding-allowance", type=float,
                   help="share of each caption's attention the padding may keep before "
                        "--padding-weight applies (default 0)")
    p.add_argument("--draw-seed", type=int,
                   help="seed of the training steps' batches, noise and captions (default: "
                        "--seed); give a new one to continue over the same data with new batches")
    p.add_argument("--init-from", metavar="DIR",
                   help="continue from this pipeline's UNet and text encoder (e.g. models/styo-mini)")
    p.set_defaults(func=cmd_world_pretrain)

    p = wsub.add_parser("snapshot", help="a pipeline from a pretraining run's newest checkpoint")
    p.add_argument("--work-dir", required=True, help="the run's --work-dir")
    p.add_argument("--out", required=True, help="new folder for the diffusers pipeline")
    p.set_defaults(func=cmd_world_snapshot)

    p = wsub.add_parser("train-judges", help="train the attribute and style judges")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=40_000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--device")
    p.set_defaults(func=cmd_world_train_judges)

    p = wsub.add_parser("train-segmenter", help="train the segmentation judge (region maps)")
    p.add_argument("--out", required=True, help="judges folder to write segmenter.* into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=12_000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--device")
    p.set_defaults(func=cmd_world_train_segmenter)

    p = wsub.add_parser("grounding", help="measure where a base model's word maps land (mIoU)")
    p.add_argument("--model", required=True, help="pipeline folder")
    p.add_argument("--judges", help="judges folder with the segmentation judge (default: shipped)")
    p.add_argument("--out", required=True, help="new folder for grounding.json and samples.png")
    _add_measure_options(p)
    p.set_defaults(func=cmd_world_grounding)

    p = wsub.add_parser("evaluate", help="measure a base model with the judges (model card)")
    p.add_argument("--model", required=True, help="pipeline folder")
    p.add_argument("--judges", help="judges folder (default: the shipped judges)")
    p.add_argument("--out", required=True, help="new folder for metrics.json and samples.png")
    _add_measure_options(p)
    p.set_defaults(func=cmd_world_evaluate)
    return parser


def _one_line(err: BaseException) -> str:
    """The message on one line (library messages may wrap), or the exception's name."""
    text = " ".join(str(err).split())
    if isinstance(err, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return text or type(err).__name__


def _quiet_libraries() -> None:
    """transformers and diffusers log warnings that mean nothing to a user of the command (e.g.
    that torchvision is missing); errors still show, and ``--debug`` shows everything."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def run(argv: Sequence[str] | None, parser_factory: Callable[[], argparse.ArgumentParser]) -> int:
    parser = parser_factory()
    args = parser.parse_args(argv)
    if not args.debug:
        _quiet_libraries()
    try:
        return args.func(args)
    except UsageError as err:
        if args.debug:
            raise
        print(f"styo: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        detail = _one_line(err) if str(err) else ""
        print(f"styo: interrupted{': ' + detail if detail else ''}", file=sys.stderr)
        return 130
    except Exception as err:  # one plain line for users; --debug for the traceback
        if args.debug:
            raise
        print(f"styo: error: {_one_line(err)}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, build_parser)


if __name__ == "__main__":
    sys.exit(main())
