"""The torch pipelines on CONVEYOR_DEVICE=cpu, in process: where the model is, that decoding ahead
(the next slice decoded while the model runs this one) gives the same answers as decoding in
turn, that a bad image still fails alone on that path, and that an explicit ``cuda`` on this
CPU-only machine fails the load with the reason. No GPU needed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from conveyor.domain.work import ItemInput
from conveyor.pipelines.base import BatchContext

torch = pytest.importorskip("torch", reason="the conveyor[ml] extra is not installed")
from conveyor import photos  # noqa: E402 - after the skip: needs scikit-image
from conveyor.pipelines.embeddings import TextEmbedding  # noqa: E402
from conveyor.pipelines.imagenet import ImagenetClassifier, Stopped  # noqa: E402
from conveyor.pipelines.torch_runtime import DeviceUnavailable  # noqa: E402

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ImagenetClassifier:
    pipeline = ImagenetClassifier(tmp_path_factory.mktemp("imagenet"), device="cpu")
    pipeline.load()
    return pipeline


def context(tmp_path: Path, should_stop: Any = lambda: False) -> BatchContext:
    return BatchContext(config={"top_k": 3}, explain=False, data_dir=tmp_path, should_stop=should_stop)


def inputs() -> list[ItemInput]:
    """The six bundled photos with a broken file in the middle: 7 items, two slices of 4 on the CPU."""
    pictures = [ItemInput(i, i, p.name, "base64", p.data) for i, p in enumerate(photos.bundled())]
    broken = ItemInput(99, 99, "broken.jpg", "base64", b"\xff\xd8 not a jpeg")
    return [*pictures[:3], broken, *pictures[3:]]


def test_the_model_is_on_the_cpu_with_the_cpu_batch_sizes(classifier: ImagenetClassifier) -> None:
    assert classifier.device == "cpu"
    assert next(classifier.model.parameters()).device.type == "cpu"
    assert classifier.effective_batch_size({}) == ImagenetClassifier.batch_sizes["cpu"]
    assert classifier.effective_batch_size({"batch_size": 3}) == 3
    assert classifier.model_batch_size == ImagenetClassifier.model_batch_sizes["cpu"] == 4
    assert classifier.overlap is None and not classifier.decodes_ahead  # on the CPU: off unless asked


def test_decoding_ahead_gives_the_same_answers(classifier: ImagenetClassifier, tmp_path: Path) -> None:
    batch = inputs()
    classifier.overlap = False
    in_turn = classifier.process_batch(batch, context(tmp_path))
    classifier.overlap = True  # as on CUDA
    ahead = classifier.process_batch(batch, context(tmp_path))
    assert classifier._decoder is not None  # the background thread did the decoding
    assert len(ahead) == len(in_turn) == len(batch)
    assert [r.ok for r in ahead] == [r.ok for r in in_turn] == [True, True, True, False, True, True, True]
    assert "not a readable image" in (ahead[3].error or "")
    for first, second in zip(in_turn, ahead, strict=True):
        if first.ok:
            assert [e["class_id"] for e in first.value["top_k"]] == [
                e["class_id"] for e in second.value["top_k"]
            ]
            assert first.value["score"] == pytest.approx(second.value["score"], abs=1e-4)
            assert [a.kind for a in second.artifacts] == [a.kind for a in first.artifacts]
    by_name = {item.name: result.value for item, result in zip(batch, ahead, strict=True) if result.ok}
    assert by_name["chelsea.png"]["class_id"] == 285  # Egyptian cat
    assert by_name["coffee.png"]["class_id"] == 967  # espresso


@pytest.mark.parametrize("overlap", [True, False])
def test_a_stop_mid_batch_drops_the_batch_promptly(
    classifier: ImagenetClassifier, tmp_path: Path, overlap: bool
) -> None:
    classifier.overlap = overlap
    calls = 0
    lock = threading.Lock()

    def stop_after_the_first_image() -> bool:
        nonlocal calls
        with lock:
            calls += 1
            return calls > 1

    with pytest.raises(Stopped):
        classifier.process_batch(inputs() * 4, context(tmp_path, stop_after_the_first_image))
    # Asked once per image at most, never the 28 images' worth: the rest was never decoded.
    assert calls < 10
    # The decoding (thread) is free again: the next batch runs normally.
    assert all(r.ok for r in classifier.process_batch(inputs()[:2], context(tmp_path)))


@no_gpu
def test_an_explicit_cuda_fails_the_load_with_the_reason(tmp_path: Path) -> None:
    for pipeline in (ImagenetClassifier(tmp_path, device="cuda"), TextEmbedding(tmp_path, device="cuda:0")):
        with pytest.raises(DeviceUnavailable, match=r"CONVEYOR_DEVICE=cuda.* sees no usable GPU"):
            pipeline.load()


def test_the_embedding_model_is_on_the_device_it_was_given(tmp_path: Path) -> None:
    pipeline = TextEmbedding(tmp_path, device="cpu")
    pipeline.load()
    assert pipeline.device == "cpu"
    assert pipeline.model.device.type == "cpu"
    assert pipeline.effective_batch_size({}) == TextEmbedding.batch_sizes["cpu"]
    ctx = BatchContext(config={}, explain=True, data_dir=tmp_path)
    (result,) = pipeline.process_batch([ItemInput(1, 1, "cat", "text", b"A cat sits on the mat.")], ctx)
    assert result.ok and result.value["dimensions"] == 384
    assert {entry["token"] for entry in result.value["token_importance"]} >= {"cat", "mat"}
