"""Real photos shipped inside installed packages (scikit-image, scikit-learn): inputs for the
ML demo, tests and benchmarks, with nothing downloaded."""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources

from PIL import Image


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes  # the encoded file (PNG or JPEG), as a user would upload it
    expected: int | None = None  # ImageNet-1k class id a good classifier puts in its top 5
    what: str = ""


#: (package, file, name, expected class id, description)
BUNDLED = (
    ("skimage.data", "chelsea.png", "chelsea.png", 285, "Chelsea the cat (Egyptian cat)"),
    ("skimage.data", "coffee.png", "coffee.png", 967, "a cup of coffee (espresso)"),
    ("sklearn.datasets.images", "china.jpg", "china.jpg", 442, "a Chinese temple (bell cote)"),
    ("skimage.data", "astronaut.png", "astronaut.png", None, "astronaut Eileen Collins"),
    ("skimage.data", "rocket.jpg", "rocket.jpg", None, "a rocket on its launch pad"),
    ("sklearn.datasets.images", "flower.jpg", "flower.jpg", None, "a flower (a hard one)"),
)


def bundled(limit: int | None = None) -> list[Photo]:
    """The bundled photos as their original files (needs scikit-image: the ``conveyor[ml]`` extra)."""
    photos = []
    for package, filename, name, expected, what in BUNDLED[:limit]:
        data = resources.files(package).joinpath(filename).read_bytes()
        photos.append(Photo(name, data, expected, what))
    return photos


def as_jpeg(photo: Photo, quality: int = 90) -> Photo:
    """The same photo re-encoded as JPEG (a second real input format)."""
    with Image.open(io.BytesIO(photo.data)) as picture:
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="JPEG", quality=quality)
    stem = photo.name.rsplit(".", 1)[0]
    return Photo(f"{stem}.jpg", buffer.getvalue(), photo.expected, photo.what)
