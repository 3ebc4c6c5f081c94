"""The ``styo`` command line: ``styo world ...`` (the miniature world), ``styo stylize``, ``styo attention``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input. Errors are one plain line
(``styo: error: ...``); ``--debug`` shows the traceback instead.

This module builds the parser and runs a command; the work is in one module per subcommand:
:mod:`styo.cli.stylize`, :mod:`styo.cli.attention` (imported only when their command runs, so
``styo --help`` never loads torch) and :mod:`styo.cli.world`; :mod:`styo.cli.checks` holds the
checks and model loading that stylize and attention share, :mod:`styo.cli.errors` the
:class:`UsageError` every module raises for bad input. Imports run one way, down that list.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ..profiles import PROFILES
from .errors import UsageError
from .world import (
    cmd_world_evaluate,
    cmd_world_grounding,
    cmd_world_judge,
    cmd_world_pretrain,
    cmd_world_render,
    cmd_world_sharpen_decoder,
    cmd_world_snapshot,
    cmd_world_styles,
    cmd_world_train_judges,
    cmd_world_train_segmenter,
)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like every other styo error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"styo: error: {message} (see `{self.prog} --help`)\n")


def cmd_stylize(args: argparse.Namespace) -> int:
    from .stylize import cmd_stylize as job

    return job(args)


def cmd_attention(args: argparse.Namespace) -> int:
    from .attention import cmd_attention as job

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
        help="stylize a face like a style image (IDL fine-tuning, then FCC sampling)",
        description="Fine-tune the model on the source face and the target style (IDL), then "
        "stylize the source (FCC). Writes DIR/stylized.png (more samples: stylized-1.png, ...), "
        "DIR/reconstruction.png, DIR/run.json and IDL's checkpoints and pipeline in DIR/idl. "
        "Defaults marked (model) are the miniature world's for the default model and the "
        "paper's Stable Diffusion settings for any other.",
    )
    p.add_argument("--source", required=True, metavar="FILE", help="the face to stylize")
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
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"),
                   help="(default: the profile's on a GPU, e.g. fp16 for Stable Diffusion; no on CPU)")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="IDL checkpoint interval in steps (0: only on Ctrl-C; default 100)")
    p.add_argument("--resume", action="store_true", help="finish the run in --out")
    p.add_argument("--n-s", type=int, default=3, help="style phrase repeats, 1..5 (default 3)")
    p.add_argument("--n-c", type=int, default=1, help="content phrase repeats, 1..5 (default 1)")
    p.add_argument("--no-fcc", action="store_true", help="ablation: sample without FCC")
    p.add_argument("--samples", type=int, default=1, help="stylized images (default 1)")
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
    p.add_argument("--threshold-weight", type=float,
                   help="weight of a loss on each grounded word's map as DAAM scores it (soft IoU "
                        "of the map thresholded at 0.4 of its range with its region; default 0)")
    p.add_argument("--threshold-at-picture", action="store_true",
                   help="score --threshold-weight's loss at the picture's resolution, the maps "
                        "upsampled bicubically as DAAM scores them (default: on the latent cells)")
    p.add_argument("--threshold-temperature", type=float,
                   help="width of that loss's soft step, in units of the map's range (default 0.1; "
                        "at the picture's resolution 0.05, or the background's leak swamps a small region)")
    p.add_argument("--threshold-region-weight", action="append", metavar="REGION=W",
                   help="weight that loss's terms for the words of one region by W (repeatable; "
                        "regions: hair eyes mouth glasses face background head; default 1 each)")
    p.add_argument("--threshold-word-weight", action="append", metavar="WORD=W",
                   help="weight that loss's term for one grounded word by W, a noun by its value's "
                        "(repeatable; e.g. closed=8 weights 'closed eyes'; default 1 each)")
    p.add_argument("--padding-weight", type=float,
                   help="weight of the attention mass on padding after the end token (default 0)")
    p.add_argument("--padding-allowance", type=float,
                   help="share of each caption's attention the padding may keep before "
                        "--padding-weight applies (default 0)")
    p.add_argument("--detail-weight", type=float,
                   help="extra weight of the denoising loss on the latent cells the eyes and "
                        "mouth cover, so their shapes follow the caption (default 0: plain MSE)")
    p.add_argument("--draw-seed", type=int,
                   help="seed of the training steps' batches, noise and captions (default: "
                        "--seed); give a new one to continue over the same data with new batches")
    p.add_argument("--init-from", metavar="DIR",
                   help="continue from this pipeline's UNet and text encoder (e.g. models/styo-mini)")
    p.add_argument("--people", type=int,
                   help="named people whose captions name them instead of listing their face "
                        "(styo.world.people; default 0: attribute captions only)")
    p.add_argument("--people-images", type=int, help="pictures of each person (default 64)")
    p.add_argument("--people-share", type=float,
                   help="share of each batch drawn from the people's pictures (default 0.25)")
    p.add_argument("--name-lr", type=float,
                   help="learning rate of the names' token embeddings alone, the rest of the "
                        "table then held (default: the names learn at --unet-lr with the rest)")
    p.add_argument("--train-only", action="append", metavar="PATTERN",
                   help="with --init-from: train only the UNet parameters whose names hold PATTERN "
                        "(repeatable; e.g. attn2.to_q and attn2.to_k: the cross-attention's queries and keys, "
                        "which set where each word acts); the text encoder and the rest stay as they were")
    p.set_defaults(func=cmd_world_pretrain)

    p = wsub.add_parser("snapshot", help="a pipeline from a pretraining run's newest checkpoint")
    p.add_argument("--work-dir", required=True, help="the run's --work-dir")
    p.add_argument("--out", required=True, help="new folder for the diffusers pipeline")
    p.set_defaults(func=cmd_world_snapshot)

    p = wsub.add_parser("sharpen-decoder",
                        help="a model with its decoder fine-tuned on the face's small parts (stage 2c)")
    p.add_argument("model", help="a finished pipeline folder (e.g. models/styo-mini); not modified")
    p.add_argument("--out", required=True, help="new folder for the pipeline with the new decoder")
    p.add_argument("--work-dir", required=True, help="data and checkpoints; rerun to resume")
    p.add_argument("--steps", type=int, help="decoder steps (default 800)")
    p.add_argument("--part-weight", type=float,
                   help="extra loss weight of the pixels on and next to the eyes, mouth and glasses "
                        "(default 30)")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.set_defaults(func=cmd_world_sharpen_decoder)

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

    p = wsub.add_parser("grounding", help="measure where a base model's word maps land (mIoU, DAAM's protocol)")
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
