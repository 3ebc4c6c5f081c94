"""StyO: one-shot face stylization with a latent diffusion model.

The method in four modules, read in this order: :mod:`styo.prompts` (the contrastive prompts and
the augmented one), :mod:`styo.idl` (Identifier Disentanglement Learning: the fine-tuning),
:mod:`styo.attention` (the cross-attention maps and FCC's copy), :mod:`styo.fcc` (the two-branch
sampler). Their public names are importable from ``styo`` itself::

    import styo
    pipe = styo.load_pipeline()                      # the miniature world; or an SD-1.x hub id
    run = styo.train(pipe, source, target, aux, styo.IDLConfig(), output_dir="run")
    picture = styo.stylize(pipe, source).images[0]

They load on first use, so ``import styo`` (and ``styo --help``) stays free of torch.
"""

import importlib as _importlib
import logging as _logging

__version__ = "0.1.0"


class _NoTorchvisionAdvice(_logging.Filter):
    """transformers warns, once per class, that CLIP's image processor falls back to its PIL
    version when torchvision is missing. StyO never uses that processor (diffusers imports it for
    the safety checker) and does not install torchvision on purpose, so the advice is noise at the
    top of every chapter; every other transformers message still comes through."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionAdvice())


# Public name -> the module that defines it (imported when the name is first used).
_API = {
    "Identifiers": "prompts", "source_prompt": "prompts", "target_prompt": "prompts",
    "aux_prompt": "prompts", "stylization_prompt": "prompts", "content_index_map": "prompts",
    "IDLConfig": "idl", "IDLResult": "idl", "train": "idl", "evaluate": "idl",
    "AttentionRecorder": "attention", "AttentionController": "attention",
    "attention_control": "attention", "copy_content_maps": "attention",
    "stylize": "fcc", "StylizeResult": "fcc",
    "load_pipeline": "pipeline", "load_image": "data", "load_aux_folder": "data",
    "generate_aux": "data",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(_importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'styo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
