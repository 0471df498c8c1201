"""Item artifacts: small files a worker makes beside an item's result (thumbnail, explanation)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ArtifactKind(StrEnum):
    SAMPLE = "sample"  # a lightweight thumbnail of an image input (JPEG, at most 128 px)
    EXPLANATION = "explanation"  # what the model looked at, e.g. a saliency map (PNG)
    EXPORT = "export"  # a data_export job's part for one source job: gzipped JSON Lines of result rows


@dataclass(frozen=True)
class Artifact:
    kind: ArtifactKind
    media_type: str
    data: bytes
