"""``digits``: a scikit-learn classifier of 8x8 handwritten digits, trained on the bundled set.

The model is trained on one half of ``sklearn.datasets.load_digits`` at first use and cached
in the data directory; the other half is what the demo submits, so its accuracy is honest.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline
from conveyor.pipelines.imaging import DECODE_ERRORS, decode_error, open_image

log = logging.getLogger(__name__)

SPLIT_SEED = 0


def _split() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return train_test_split(
        digits.images, digits.target, test_size=0.5, random_state=SPLIT_SEED, stratify=digits.target
    )


def holdout_pngs(limit: int | None = None, scale: int = 4) -> list[tuple[str, bytes, int]]:
    """(name, PNG bytes, true label) for the held-out half: real inputs for demos and tests."""
    _, images, _, labels = _split()
    out: list[tuple[str, bytes, int]] = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        if limit is not None and index >= limit:
            break
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        out.append((f"digit-{index:04d}.png", buffer.getvalue(), int(label)))
    return out


class DigitsPipeline(Pipeline):
    slug = "digits"
    name = "Handwritten digits"
    description = (
        "Classifies images of handwritten digits (0-9) with an SVM trained on scikit-learn's digits set."
    )
    version = 1
    input_kinds = ("base64",)
    stages: ClassVar[tuple[StageDef, ...]] = (StageDef("classify", "Classify"),)
    batch_size = 64
    image_classification_model = True

    def load(self) -> None:
        import sklearn

        path = self.data_dir / "models" / f"digits-v{self.version}-sklearn{sklearn.__version__}.pkl"
        if path.exists():
            with path.open("rb") as fh:
                self.model = pickle.load(fh)
            return
        from sklearn.svm import SVC

        train_images, _, train_labels, _ = _split()
        model = SVC(gamma=0.001, C=10.0, probability=True, random_state=SPLIT_SEED)
        model.fit(train_images.reshape(len(train_images), -1), train_labels)
        self.model = model
        _cache(model, path)

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        vectors: list[np.ndarray] = []
        results: list[ItemResult | None] = []
        for item in batch:
            try:
                vectors.append(_to_vector(item.data))
                results.append(None)
            except DECODE_ERRORS as exc:  # a bomb or a broken file fails alone, not its batch
                results.append(ItemResult.failure(decode_error(exc)))
        if vectors:
            probabilities = self.model.predict_proba(np.stack(vectors))
            classes = self.model.classes_
            rows = iter(probabilities)
            for index, current in enumerate(results):
                if current is None:
                    row = next(rows)
                    order = np.argsort(row)[::-1][:3]
                    top = [{"label": int(classes[i]), "score": round(float(row[i]), 4)} for i in order]
                    results[index] = ItemResult.success(
                        {"label": top[0]["label"], "score": top[0]["score"], "top_k": top}
                    )
        return [r for r in results if r is not None]


def _to_vector(data: bytes) -> np.ndarray:
    with open_image(data) as picture:
        picture.load()
        gray = picture.convert("L").resize((8, 8), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float64).reshape(-1) * (16.0 / 255.0)


def _cache(model: object, path: Path) -> None:
    """Keep the trained model for the next load. Only a speed-up: when the data directory cannot
    take it (disk full, read-only), the model in memory still serves and no partial file is left."""
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as fh:
            pickle.dump(model, fh)
        os.replace(partial, path)  # atomic: workers training at once never read a half file
    except OSError as exc:
        log.warning("could not cache the digits model in %s (%s); it is kept in memory only", path, exc)
        partial.unlink(missing_ok=True)
