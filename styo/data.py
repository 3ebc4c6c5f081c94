"""Loading and validating images, and StyO's auxiliary set.

Users hand StyO arbitrary files: phone photos with EXIF rotation, grayscale scans, palette GIFs,
transparent PNGs, 16-bit TIFFs, panoramas. Each is either turned into the RGB square the model
expects, with a *notice* saying what was changed, or refused with an :class:`ImageInputError`
that names the file, the problem and the fix. Files are only ever opened for reading.

The auxiliary set (docs/design.md §1) is either a folder of portraits the user has, or portraits the
base model generates itself from a plain portrait prompt before fine-tuning (like DreamBooth's class
images), cached on disk so that repeated runs do not pay for generation again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 8  # below this there is no face left to learn from
MAX_SIDE = 8192  # above this decoding alone costs hundreds of MB; no portrait needs it
MAX_ASPECT = 4.0  # a centre crop of a longer strip keeps too little of the picture
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_AUX_PROMPT = "a drawing of portrait"
_SUPPORTED = "PNG, JPEG, WebP, BMP, GIF or TIFF"


class ImageInputError(ValueError):
    """A file that cannot serve as an input image; the message says which file, why, and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str) -> None:
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path}: {problem}. {fix}")


def _open_checked(path: Path) -> tuple[Image.Image, int]:
    """Open and fully decode ``path`` (read-only); return the image and its number of frames.

    Every failure becomes an :class:`ImageInputError`. The frame count is read while the file is
    open because Pillow counts GIF frames lazily by seeking through the file.
    """
    if not path.exists():
        raise ImageInputError(
            path, "file not found", "Check the path and pass an existing image file."
        )
    if path.is_dir():
        raise ImageInputError(
            path, "is a directory, not an image file", f"Pass one image file ({_SUPPORTED})."
        )
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fh)
            _check_dimensions(path, img.size)
            frames = getattr(img, "n_frames", 1)
            img.load()  # decode everything now: truncated files fail here, not later
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(
            path, f"image is too large to decode safely ({e})", "Downscale it (e.g. to 1024 px)."
        ) from e
    except UnidentifiedImageError as e:
        raise ImageInputError(
            path, "not a readable image", f"Pass an image file ({_SUPPORTED})."
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(
            path, f"image data is truncated or corrupt ({e})", "Re-export or re-download the image."
        ) from e
    return img, frames


def _check_dimensions(path: Path, size: tuple[int, int]) -> None:
    """Refuse sizes no resize can rescue; checked from the header, before decoding."""
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ImageInputError(
            path,
            f"image is {w}x{h} px, too small (each side must be at least {MIN_SIDE} px)",
            "Use a larger picture of the face.",
        )
    if max(w, h) > MAX_SIDE:
        raise ImageInputError(
            path,
            f"image is {w}x{h} px, too large (each side must be at most {MAX_SIDE} px)",
            "Downscale it first (e.g. to 1024 px).",
        )
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise ImageInputError(
            path,
            f"image is {w}x{h} px; a centre crop of so long a strip (aspect ratio above "
            f"{MAX_ASPECT:g}:1) would keep too little of it",
            "Crop it around the face first.",
        )


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale to 8-bit: Pillow's convert() would clip, not scale."""
    a = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0.0) > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image, name: str, notices: list[str]) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white (a plain portrait background)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        notices.append(f"{name}: reduced the {mode} high-bit-depth image to 8-bit RGB")
        return _high_depth_to_l(img).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        notices.append(f"{name}: composited the transparent {mode} image on white")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    notices.append(f"{name}: converted the {mode} image to RGB")
    return img.convert("RGB")


def _square(img: Image.Image, size: int, name: str, notices: list[str]) -> Image.Image:
    """Centre-crop to a square, then resize to ``size`` with LANCZOS, noting each change."""
    w, h = img.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        notices.append(f"{name}: centre-cropped the {w}x{h} image to {side}x{side}")
    side = img.size[0]
    if side != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        verb = "upscaled" if side < size else "downscaled"
        notices.append(f"{name}: {verb} {side}x{side} to {size}x{size}")
    return img


def load_image(
    path: str | os.PathLike, size: int, *, notices: list[str] | None = None
) -> Image.Image:
    """Load ``path`` as a ``size``×``size`` RGB image, or raise :class:`ImageInputError`.

    Every silent change would be a surprise in a one-shot method where the single image *is* the
    data, so each conversion, crop or resize appends a line to ``notices`` (the CLI prints them).
    """
    if size < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE}, got {size}")
    path = Path(path)
    notices = [] if notices is None else notices
    img, frames = _open_checked(path)
    name = path.name
    if frames > 1:
        notices.append(f"{name}: used the first of its {frames} frames")
    if img.getexif().get(0x0112, 1) != 1:  # phone photos are often stored sideways
        img = ImageOps.exif_transpose(img)
        notices.append(f"{name}: turned upright as its EXIF orientation tag says")
    try:
        img = _to_rgb(img, name, notices)
    except (ValueError, OSError) as e:
        raise ImageInputError(
            path, f"cannot convert its {img.mode} colour mode to RGB ({e})", "Save it as RGB PNG."
        ) from e
    return _square(img, size, name, notices)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image to a float CHW tensor in [-1, 1], the range the SD VAE was trained on."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def load_aux_folder(
    folder: str | os.PathLike, size: int, *, notices: list[str] | None = None
) -> list[Image.Image]:
    """All images in ``folder`` (sorted by name, hidden files and other suffixes skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "folder not found" if not folder.exists() else "is a file, not a folder"
        raise ImageInputError(folder, problem, "Pass a folder of portrait images as the aux set.")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise ImageInputError(
            folder,
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder",
            "Put portrait images in it, or generate the auxiliary set with the base model.",
        )
    return [load_image(p, size, notices=notices) for p in files]


def model_fingerprint(pipe, values: tuple[str, ...] = ("unet", "vae", "text_encoder")) -> str:
    """A cheap identity of a pipeline: module classes and shapes, leading weight values, and a
    checksum of every row of each embedding table.

    Hashing all of SD's weights would take seconds; the first values of every tensor tell two
    checkpoints (or a base model from its fine-tuned self) apart just as well, and do not depend on
    the folder or hub id the model was loaded from. An embedding table is the exception: an edit
    in the manner of textual inversion changes a few words' rows and leaves the first values as
    they were, so each row contributes a checksum: the sum of its values' bit patterns as integers,
    which, unlike a float sum, is the same on any device in any order (a pass over the table alone,
    on the CPU so that a full GPU needs no room for it; milliseconds even for SD's vocabulary).
    Only the modules named in ``values`` contribute weights (IDL leaves out the ones its
    checkpoints overwrite anyway).
    """
    h = hashlib.sha256()
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name)
        params = list(module.parameters())
        h.update(f"{name}:{type(module).__name__}:{[tuple(p.shape) for p in params]}".encode())
        if name in values:
            heads = torch.cat([p.detach().flatten()[:4].float() for p in params])
            h.update(heads.cpu().numpy().tobytes())
            for table in (m.weight for m in module.modules() if isinstance(m, torch.nn.Embedding)):
                bits = table.detach().cpu().float().contiguous().view(torch.int32)
                h.update(bits.sum(1, dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


def _aux_key(pipe, prompt: str, seed: int, steps: int, guidance: float, size: int) -> dict:
    """What an auxiliary image depends on; n is not in it since image i depends on seed + i only."""
    return {
        "model": model_fingerprint(pipe),
        "prompt": prompt,
        "seed": seed,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "size": size,
    }


def generate_aux(
    pipe,
    n: int,
    *,
    prompt: str = DEFAULT_AUX_PROMPT,
    cache_dir: str | os.PathLike,
    seed: int = 0,
    batch_size: int = 8,
    num_inference_steps: int = 25,
    guidance_scale: float = 5.0,
) -> list[Image.Image]:
    """``n`` portraits from the base pipeline (call it *before* fine-tuning), cached as PNGs.

    The default prompt is the miniature world's caption with no style and no content phrase; for
    SD pass a plain portrait prompt of your own (e.g. "a photo of a face"). The cache folder is
    keyed by the model's fingerprint, prompt, seed, steps, guidance and size; image ``i`` is
    ``aux-{i:04d}.png`` from ``torch.Generator().manual_seed(seed + i)``, so a later call loads
    existing images and generates only the missing ones (n may grow).
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be at least 1, got n={n}, batch_size={batch_size}")
    from .pipeline import image_size  # lazy: validating images should not import diffusers

    size = image_size(pipe)
    key = _aux_key(pipe, prompt, seed, num_inference_steps, guidance_scale, size)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"aux-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "key.json").is_file():  # what the folder holds, for people browsing it
        (folder / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True))
    files = [folder / f"aux-{i:04d}.png" for i in range(n)]
    missing = [i for i, f in enumerate(files) if not f.is_file()]
    for start in range(0, len(missing), batch_size):
        _generate_batch(
            pipe,
            missing[start : start + batch_size],
            files,
            prompt,
            seed,
            num_inference_steps,
            guidance_scale,
            size,
        )
    return [_load_png(f) for f in files]


def _generate_batch(pipe, idx, files, prompt, seed, steps, guidance, size) -> None:
    """Generate the images ``idx`` in one batch; each file appears whole or not at all."""
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in idx]
    images = pipe(
        prompt=[prompt] * len(idx),
        generator=gens,
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=size,
        width=size,
        output_type="pil",
    ).images
    for i, img in zip(idx, images, strict=True):
        tmp = files[i].with_suffix(".tmp")
        img.save(tmp, format="PNG")
        os.replace(tmp, files[i])


def _load_png(path: Path) -> Image.Image:
    """A cached PNG, decoded and detached from its file handle."""
    with Image.open(path) as img:
        return img.convert("RGB")
