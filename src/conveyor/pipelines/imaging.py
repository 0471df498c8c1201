"""Pillow helpers shared by image pipelines and the worker: decode, thumbnails, PNG maps."""

from __future__ import annotations

import io
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from conveyor.domain.artifacts import Artifact, ArtifactKind

SAMPLE_PX = 128
SAMPLE_QUALITY = 80
#: Most pixels an input image may have. Pillow only warns between this (its ``MAX_IMAGE_PIXELS``,
#: ~89.5 Mpx) and twice it, and decodes such an image anyway: a tiny PNG declaring 10,000 x 10,000
#: pixels would cost a worker some 500 MB. Conveyor refuses it, before decoding, as unreadable.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: What Pillow raises for bytes that are not a readable image (hostile files included).
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    Image.DecompressionBombError,
)


def open_image(data: bytes) -> Image.Image:
    """Open an image (its header only); a decompression bomb is refused before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused just below
        picture = Image.open(io.BytesIO(data))
    width, height = picture.size
    if width * height > MAX_PIXELS:
        picture.close()
        raise Image.DecompressionBombError(
            f"{width}x{height} is {width * height} pixels, over the limit of {MAX_PIXELS} "
            "(a decompression bomb?)"
        )
    return picture


def open_rgb(data: bytes) -> Image.Image:
    """Decode fully (so a truncated file fails here, not later) and convert to RGB."""
    with open_image(data) as picture:
        picture.load()
        return picture.convert("RGB")


def decode_error(exc: Exception) -> str:
    """A message for the item's error; Pillow's mention of the in-memory buffer is left out."""
    detail = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip()
    return f"not a readable image ({type(exc).__name__}: {detail})" if detail else "not a readable image"


def sample(picture: Image.Image) -> Artifact:
    """A lightweight thumbnail: JPEG, longest side at most 128 px."""
    thumb = picture.convert("RGB")
    thumb.thumbnail((SAMPLE_PX, SAMPLE_PX), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=SAMPLE_QUALITY)
    return Artifact(ArtifactKind.SAMPLE, "image/jpeg", buffer.getvalue())


def sample_from_bytes(data: bytes) -> Artifact | None:
    """The sample of an image input, or None if the bytes are not an image."""
    try:
        with open_image(data) as picture:
            picture.draft("RGB", (SAMPLE_PX * 2, SAMPLE_PX * 2))  # JPEG: decode at reduced scale
            picture.load()
            return sample(picture)
    except DECODE_ERRORS:
        return None


def heatmap_png(values: np.ndarray, size: tuple[int, int] | None = None, blur: float = 2.0) -> Artifact:
    """A 2-D map of non-negative importances as a greyscale PNG (brightest = most important).

    Raw gradients are speckled and a few pixels dwarf the rest: the map is clipped at its 99.5th
    percentile, smoothed, and stretched to the full 0-255 range, so the regions show, not the specks.
    """
    ceiling = float(np.percentile(values, 99.5)) if values.size else 0.0
    scaled = np.clip(values / ceiling, 0.0, 1.0) if ceiling > 0 else np.zeros_like(values)
    picture = Image.fromarray((scaled * 255.0).astype(np.uint8), mode="L")
    if blur > 0:
        picture = ImageOps.autocontrast(picture.filter(ImageFilter.GaussianBlur(blur)))
    if size is not None and picture.size != size:
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Artifact(ArtifactKind.EXPLANATION, "image/png", buffer.getvalue())
