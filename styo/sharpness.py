"""How peaked a model's cross-attention is: whether FCC has anything to transplant.

FCC moves the *maps* of the content tokens from one branch to the other. That moves something only
when the maps pick out a few tokens per pixel, as Stable Diffusion's do. A map spread evenly over
all 77 tokens (normalised entropy near 1) reads the prompt as one pooled vector, whatever FCC puts
in its columns. :func:`attention_sharpness` samples a model with a measuring processor on every
cross-attention layer (it reads the maps, then hands the layer to its own processor) and reports, per head and pixel, averaged over layers and steps:

- ``entropy``: the entropy of the attention over tokens divided by log(tokens): 1 is uniform;
- ``max_prob``: the largest probability a pixel gives one token (1 / tokens when uniform);
- ``prompt_mass``: the share of attention on the prompt's own tokens (BOS to EOS);
  ``padding_mass`` the rest, on the padding after EOS.

Sampling runs without classifier-free guidance, so every row is conditional.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .attention import MapsProcessor, attention_processors


class _Statistics:
    """Running sums of the map statistics over every measured layer call."""

    def __init__(self, n_prompt_tokens: torch.Tensor) -> None:
        self.n_prompt = n_prompt_tokens  # [batch]: BOS..EOS length of each row's prompt
        self.sums = torch.zeros(4, dtype=torch.float64)
        self.count = 0

    def add(self, probs: torch.Tensor) -> None:
        """``probs`` ``[batch, heads, pixels, tokens]``."""
        tokens = probs.shape[-1]
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(tokens)
        within = torch.arange(tokens, device=probs.device) < self.n_prompt.to(probs.device)[:, None]
        prompt_mass = (probs * within[:, None, None, :]).sum(-1).mean()
        stats = torch.stack([entropy.mean(), probs.amax(-1).mean(), prompt_mass, 1.0 - prompt_mass])
        self.sums += stats.double().cpu()
        self.count += 1

    def result(self) -> dict[str, float]:
        if not self.count:
            raise RuntimeError("no cross-attention layer ran: is this a text-conditioned UNet?")
        names = ("entropy", "max_prob", "prompt_mass", "padding_mass")
        return {n: float(v) for n, v in zip(names, self.sums / self.count, strict=True)}


class _Measure(MapsProcessor):
    """Adds each cross-attention layer's maps to the running statistics and leaves them as they are."""

    def __init__(self, stats: _Statistics, base: Any) -> None:
        super().__init__(base)
        self.stats = stats

    def maps(self, probs: torch.Tensor) -> torch.Tensor:
        self.stats.add(probs)
        return probs


@torch.no_grad()
def attention_sharpness(
    pipe: Any,
    prompts: Sequence[str],
    *,
    num_inference_steps: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Sample ``prompts`` once each and measure the cross-attention (see the module docstring).

    The UNet's processors are put back afterwards, also on error.
    """
    if not prompts:
        raise ValueError("give at least one prompt to measure the attention on")
    stats = _Statistics(torch.tensor([len(pipe.tokenizer(p).input_ids) for p in prompts]))
    with attention_processors(pipe.unet, lambda _, base: _Measure(stats, base)):
        pipe(list(prompts), num_inference_steps=num_inference_steps, guidance_scale=1.0,
             generator=torch.Generator("cpu").manual_seed(seed), output_type="latent")
    return stats.result()
