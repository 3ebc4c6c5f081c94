"""What the miniature UNet costs at a finer latent side: the price of cross-attention finer than 16².

The miniature model's latents are 16² for a 64-pixel picture, so its finest cross-attention maps
have 16² cells and an eye is one or two of them. Finer maps need finer latents (a VAE that
downsamples less, or larger pictures) and the UNet then runs every layer on four times the cells.
This times the same UNet architecture (``styo.world.architecture.build_unet``, untrained: the cost
depends on the shapes alone) at each latent side, in the three kinds of work the project does:

- an IDL step: three terms of batch 1 (source, target, one auxiliary portrait), AdamW;
- a sampling step: four pictures with classifier-free guidance (batch 8), no gradient;
- a pretraining step: batch ``--pretrain-batch`` (64, as the grounded continuations train), AdamW.

Each step is timed on its own after one warm-up step and the median is kept; the projections
multiply it by the book's IDL run (400 steps) and one sampling run (25 steps). A pretraining run
is projected by its ratio alone: its data, text encoder and EMA cost besides the UNet (the model
card has version 1's measured hours).

    .venv/bin/python benchmarks/latent_side_cost.py                  # sides 16 and 32
    .venv/bin/python benchmarks/latent_side_cost.py --sides 16,32,64 --steps 3

Writes benchmarks/results/latent-side-cost.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from styo.book.results import markdown_table
from styo.world import architecture as arch

IDL_STEPS, SAMPLE_STEPS = 400, 25


def _sides(text: str) -> list[int]:
    try:
        sides = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sides takes latent sides separated by commas, like 16,32; "
                                         f"got {text!r}") from None
    if not sides or min(sides) < 8 or any(s % 4 for s in sides):
        raise argparse.ArgumentTypeError(f"--sides needs multiples of 4 from 8 up (the UNet halves the side "
                                         f"twice), got {text!r}")
    return sides


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _median_seconds(step, steps: int) -> float:
    step()  # warm-up: allocations and kernel choice
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def time_side(side: int, steps: int, pretrain_batch: int, seed: int = 0) -> dict[str, float]:
    """Median seconds of one IDL step, one sampling step and one pretraining step at ``side``."""
    torch.manual_seed(seed)
    unet = arch.build_unet()
    unet.register_to_config(sample_size=side)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed)

    def train(batch: int) -> None:
        z = torch.randn(batch, 4, side, side, generator=gen)
        context = torch.randn(batch, 77, arch.TEXT_DIM, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        loss = (unet(z, t, encoder_hidden_states=context).sample - z).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def sample() -> None:
        z = torch.randn(8, 4, side, side, generator=gen)
        context = torch.randn(8, 77, arch.TEXT_DIM, generator=gen)
        unet(z, torch.full((8,), 500), encoder_hidden_states=context)

    return {"idl_step": _median_seconds(lambda: train(3), steps),
            "sample_step": _median_seconds(sample, steps),
            "pretrain_step": _median_seconds(lambda: train(pretrain_batch), steps)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=_sides, default=[16, 32], help="latent sides, e.g. 16,32")
    parser.add_argument("--steps", type=_positive, default=15, help="steps timed of each kind (median kept)")
    parser.add_argument("--pretrain-batch", type=_positive, default=64, help="batch of the pretraining step")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)

    rows = []
    for side in args.sides:
        t = time_side(side, args.steps, args.pretrain_batch)
        rows.append({"side": side, **t, "idl_run_s": t["idl_step"] * IDL_STEPS,
                     "sampling_run_s": t["sample_step"] * SAMPLE_STEPS})
        print(f"{side}²: IDL step {t['idl_step']:.3f} s, sampling step {t['sample_step']:.3f} s, "
              f"pretraining step {t['pretrain_step']:.2f} s", flush=True)
    for row in rows:
        for kind in ("idl_step", "sample_step", "pretrain_step"):
            row[f"{kind}_vs_first"] = row[kind] / rows[0][kind]
    command = (f"benchmarks/latent_side_cost.py --sides {','.join(map(str, args.sides))} --steps {args.steps} "
               f"--pretrain-batch {args.pretrain_batch}")
    report = {"kind": "latent-side-cost", "command": command, "machine": platform.machine(),
              "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "rows": rows}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latent-side-cost.json").write_text(json.dumps(report, indent=1) + "\n")
    first = args.sides[0]
    md = ["# What the miniature UNet costs at a finer latent side", "",
          f"`{command}`, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}", "",
          f"The miniature UNet's architecture, untrained, at each latent side (16² is the shipped model's: "
          f"cross-attention at 16², 8² and 4²); the median of {args.steps} timed steps after a warm-up. "
          f"`× {first}²` is the step's time against the first side's. The runs project the steps: "
          f"an IDL run of {IDL_STEPS} steps (three terms of batch 1), a sampling run of {SAMPLE_STEPS} steps "
          f"(four pictures with guidance, batch 8); the pretraining step has batch {args.pretrain_batch}. "
          "The text encoder and the VAE are left out: the encoder's cost does not depend on the latent side, "
          "and the VAE runs once per picture, not once per step.", "",
          markdown_table(rows, ["side", "idl_step", "idl_step_vs_first", "sample_step", "sample_step_vs_first",
                                "pretrain_step", "pretrain_step_vs_first", "idl_run_s", "sampling_run_s"],
                         ["latent side", "IDL step (s)", f"× {first}²", "sampling step (s)", f"× {first}²",
                          "pretraining step (s)", f"× {first}²", "IDL run (s)", "sampling run (s)"]), ""]
    (out / "latent-side-cost.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
