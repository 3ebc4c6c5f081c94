"""StyO: one-shot face stylisation with a latent diffusion model."""

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
