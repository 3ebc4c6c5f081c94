"""The ``styo`` command line: ``styo world ...`` (the miniature world), ``styo stylize``, ``styo attention``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input. Errors are one plain line
(``styo: error: ...``); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user: exit code 2."""


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
    from .world.render import render_seed

    overrides = _parse_sets(args.set or [])
    try:
        validate(args.style, overrides)
    except ValueError as err:
        raise UsageError(str(err)) from err
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; choose another --out (or pass --force to replace it)")
    image, style, attributes = render_seed(args.seed, style=args.style, overrides=overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    if args.json:
        print(json.dumps({"style": style, "attributes": attributes}))
    return 0


def cmd_world_judge(args: argparse.Namespace) -> int:
    from .data import ImageInputError
    from .world.judges import judge_files

    try:
        results = judge_files(args.files, judges_dir=args.judges)
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


def cmd_world_pretrain(args: argparse.Namespace) -> int:
    from .world.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(seed=args.seed)
    for name in (
        "n_images",
        "vae_steps",
        "unet_steps",
        "unet_batch",
        "vae_batch",
        "checkpoint_every",
    ):
        value = getattr(args, name)
        if value is not None:
            if value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
            setattr(cfg, name, value)
    out = Path(args.out)
    if (out / "model_index.json").exists():
        raise UsageError(f"{out} already holds a pipeline; choose another --out")
    work = Path(args.work_dir) if args.work_dir else Path("runs") / "pretrain"
    pretrain(out, work, cfg, device=args.device)
    print(f"saved pipeline to {out}")
    return 0


def cmd_world_train_judges(args: argparse.Namespace) -> int:
    from .world.judges import train_judges

    out = Path(args.out)
    train_judges(
        out, seed=args.seed, n_images=args.n_images, epochs=args.epochs, device=args.device
    )
    print(f"saved judges to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="styo", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.set_defaults(func=cmd_world_render)

    p = wsub.add_parser("judge", help="read style and attributes of images with the judges")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p.add_argument("--judges", help="judges folder (default: the shipped judges)")
    p.set_defaults(func=cmd_world_judge)

    p = wsub.add_parser("pretrain", help="train the miniature base model from scratch (resumable)")
    p.add_argument("--out", required=True, help="folder for the diffusers pipeline")
    p.add_argument("--work-dir", help="checkpoints and caches (default runs/pretrain)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    for name in (
        "n-images",
        "vae-steps",
        "unet-steps",
        "unet-batch",
        "vae-batch",
        "checkpoint-every",
    ):
        p.add_argument(f"--{name}", type=int)
    p.set_defaults(func=cmd_world_pretrain)

    p = wsub.add_parser("train-judges", help="train the attribute and style judges")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=40_000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--device")
    p.set_defaults(func=cmd_world_train_judges)
    return parser


def run(argv: Sequence[str] | None, parser_factory: Callable[[], argparse.ArgumentParser]) -> int:
    parser = parser_factory()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        if args.debug:
            raise
        print(f"styo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("styo: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one plain line for users; --debug for the traceback
        if args.debug:
            raise
        print(f"styo: error: {err}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, build_parser)


if __name__ == "__main__":
    sys.exit(main())
