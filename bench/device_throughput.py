"""Items/s of the torch pipelines per device this machine has (``cpu``; ``cuda:N`` for each GPU
torch sees), in process: ``imagenet-classifier`` with and without decode-ahead (the next slice
decoded in a background thread while the model runs this one), and ``text-embedding``, each at
the batch size CONVEYOR_DEVICE's device kind gives it, next to a plain in-process loop over the
same model and inputs measured in the same run. Run it on a GPU machine to see what a GPU gives.

Inputs: the bundled real photos (``conveyor.photos``, 0.1-0.3 Mpx), cycled to N, and the same
photos enlarged to ``--large-px`` on their longest side and re-encoded as JPEG (camera-sized
images, whose decoding weighs more against the model); English paragraphs (``model_throughput.
texts``) for the embeddings.

Measured: ``Pipeline.process_batch`` over the N inputs in batches of the device's default batch
size (what a worker does between its fetches and write-backs), with ``overlap`` off and on. The
pipeline's work includes each image's 128 px JPEG sample. Baseline: decode -> preprocess ->
forward -> top-5 in batches of the forward size the pipeline uses on that device (its best on
this CPU), no samples, nothing overlapped; for texts ``SentenceTransformer.encode`` in batches of
the same size. The variants take turns batch by batch (a busy machine slows them alike); a
variant's figure is its items over its summed batch times, and its best round counts.

    .venv/bin/python bench/device_throughput.py [--images 64] [--texts 400] [--repeat 3]
        [--large-px 1600] [--threads T] [--devices cpu,cuda:0] [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import emit, log, machine_info, rnd
from model_throughput import texts


def large_photos(n: int, longest: int) -> list[tuple[str, bytes]]:
    """The bundled photos enlarged to ``longest`` px and re-encoded as JPEG (quality 90)."""
    from PIL import Image

    from conveyor import photos

    out: list[bytes] = []
    for photo in photos.bundled():
        with Image.open(io.BytesIO(photo.data)) as picture:
            rgb = picture.convert("RGB")
        scale = longest / max(rgb.size)
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return [(f"{i:05d}-large.jpg", out[i % len(out)]) for i in range(n)]


def bundled_photos(n: int) -> list[tuple[str, bytes]]:
    from conveyor import photos

    bundled = photos.bundled()
    return [(f"{i:05d}-{bundled[i % len(bundled)].name}", bundled[i % len(bundled)].data) for i in range(n)]


def items(data: list[tuple[str, bytes]], kind: str) -> list[Any]:
    from conveyor.domain.work import ItemInput

    return [ItemInput(i, i, name, kind, raw) for i, (name, raw) in enumerate(data)]


def interleaved(
    rounds: int, steps: int, variants: dict[str, Callable[[int], int]], count: int
) -> dict[str, dict[str, Any]]:
    """Items/s of each variant: every round runs step 0 of each variant, then step 1 of each, ...
    (the order rotating per step), so a change of the machine's load hits all variants alike; a
    variant's figure is its items over its summed step times, the best round counts. A step
    returns how many items succeeded: all of them must."""
    measured: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(rounds):
        seconds = dict.fromkeys(names, 0.0)
        for step in range(steps):
            shift = step % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                succeeded = variants[name](step)
                seconds[name] += time.perf_counter() - started
                if succeeded < 0:
                    raise RuntimeError(f"{name}: items failed")
        for name in names:
            measured[name].append(count / seconds[name])
        log(f"  round {number + 1}: " + ", ".join(f"{n} {v[-1]:.1f}/s" for n, v in measured.items()))
    return {
        name: {"items_per_second": rnd(max(values), 2), "rounds": [rnd(v, 2) for v in values]}
        for name, values in measured.items()
    }


def checked(results: list[Any], expected: int) -> int:
    """The step's item count, or -1 when one of them failed."""
    return expected if sum(r.ok for r in results) == expected == len(results) else -1


def plain_imagenet(pipeline: Any, raws: list[bytes], size: int) -> int:
    """A user's own loop: decode -> preprocess -> forward -> top-5, one step after the other."""
    import numpy as np

    from conveyor.pipelines import imaging
    from conveyor.pipelines.imagenet import preprocess

    torch = pipeline.torch
    for first in range(0, len(raws), size):
        arrays = np.stack([preprocess(imaging.open_rgb(raw)) for raw in raws[first : first + size]])
        with torch.inference_mode():
            inputs = torch.from_numpy(arrays).to(pipeline.device)
            torch.softmax(pipeline.model(inputs), dim=1).topk(5, dim=1)[1].cpu()
    return len(raws)


def imagenet_on(device: str, workloads: dict[str, list[tuple[str, bytes]]], repeat: int) -> dict[str, Any]:
    from conveyor.pipelines.base import BatchContext
    from conveyor.pipelines.imagenet import ImagenetClassifier

    started = time.perf_counter()
    pipeline = ImagenetClassifier(Path("."), device=device)
    pipeline.load()
    load_ms = round((time.perf_counter() - started) * 1000)
    size, forward = pipeline.effective_batch_size({}), pipeline.model_batch_size
    ctx = BatchContext(config={"top_k": 5}, explain=False, data_dir=Path("."))
    out: dict[str, Any] = {
        "batch_size": size,
        "forward_batch": forward,
        "overlap_by_default": pipeline.decodes_ahead,
        "model_load_ms": load_ms,
    }
    for name, data in workloads.items():
        batches = [items(data[first : first + size], "base64") for first in range(0, len(data), size)]

        def through_pipeline(overlap: bool, batches: list[list[Any]] = batches) -> Callable[[int], int]:
            def step(number: int) -> int:
                pipeline.overlap = overlap
                return checked(pipeline.process_batch(batches[number], ctx), len(batches[number]))

            return step

        def plain(number: int, batches: list[list[Any]] = batches) -> int:
            return plain_imagenet(pipeline, [item.data for item in batches[number]], forward)

        pipeline.process_batch(batches[0], ctx)  # warm the kernels
        log(f"imagenet-classifier on {device}, {name}: {len(data)} images, batch {size}, forward {forward}")
        variants = {
            "plain_loop": plain,
            "overlap_off": through_pipeline(overlap=False),
            "overlap_on": through_pipeline(overlap=True),
        }
        figures = interleaved(repeat, len(batches), variants, len(data))
        on, off = figures["overlap_on"]["items_per_second"], figures["overlap_off"]["items_per_second"]
        plain_rate = figures["plain_loop"]["items_per_second"]
        # Within a round the variants took turns batch by batch: the per-round ratio is the fair one.
        by_round = [
            a / b
            for a, b in zip(figures["overlap_on"]["rounds"], figures["overlap_off"]["rounds"], strict=True)
        ]
        figures["overlap_speedup_by_round"] = [rnd(r, 3) for r in by_round]
        figures["overlap_speedup"] = rnd(statistics.median(by_round), 3)
        figures["overlap_speedup_best_rounds"] = rnd(on / off, 3)
        figures["ratio_overlap_on_to_plain"] = rnd(on / plain_rate, 3)
        figures["images"] = len(data)
        out[name] = figures
    pipeline.overlap = None
    return out


def embedding_on(device: str, data: list[tuple[str, bytes]], repeat: int) -> dict[str, Any]:
    from conveyor.pipelines.base import BatchContext
    from conveyor.pipelines.embeddings import TextEmbedding

    started = time.perf_counter()
    pipeline = TextEmbedding(Path("."), device=device)
    pipeline.load()
    load_ms = round((time.perf_counter() - started) * 1000)
    size = pipeline.effective_batch_size({})
    ctx = BatchContext(config={}, explain=False, data_dir=Path("."))
    batches = [items(data[first : first + size], "text") for first in range(0, len(data), size)]

    def plain(number: int) -> int:
        pipeline.model.encode(
            [item.data.decode("utf-8") for item in batches[number]],
            batch_size=size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return len(batches[number])

    def through_pipeline(number: int) -> int:
        return checked(pipeline.process_batch(batches[number], ctx), len(batches[number]))

    through_pipeline(0)  # warm the kernels
    log(f"text-embedding on {device}: {len(data)} texts, batch {size}")
    variants = {"plain_loop": plain, "pipeline": through_pipeline}
    figures = interleaved(repeat, len(batches), variants, len(data))
    figures["ratio_to_plain"] = rnd(
        figures["pipeline"]["items_per_second"] / figures["plain_loop"]["items_per_second"], 3
    )
    return {"batch_size": size, "model_load_ms": load_ms, "texts": len(data), **figures}


def available_devices() -> list[str]:
    import torch

    return [
        "cpu",
        *(f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64, help="images per pass (default 64)")
    parser.add_argument("--texts", type=int, default=400, help="texts per pass (default 400)")
    parser.add_argument("--large-px", type=int, default=1600, help="longest side of the large photos")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each variant counts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; default: every core")
    parser.add_argument("--devices", default=None, help="comma-separated; default: cpu and every GPU")
    parser.add_argument("--quick", action="store_true", help="32 images, 160 texts, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.texts, args.repeat = 32, 160, 2
    # torch on every core (as a user's own loop), or --threads
    os.environ["CONVEYOR_MODEL_THREADS"] = str(args.threads or os.cpu_count() or 1)
    devices = args.devices.split(",") if args.devices else available_devices()
    workloads = {"photos": bundled_photos(args.images), "large": large_photos(args.images, args.large_px)}
    sentences = texts(args.texts)
    by_device: dict[str, Any] = {}
    for device in devices:
        by_device[device] = {
            "imagenet-classifier": imagenet_on(device, workloads, args.repeat),
            "text-embedding": embedding_on(device, sentences, args.repeat),
        }
    import torch

    emit(
        {
            "benchmark": "device_throughput",
            "machine": machine_info(),
            "params": {
                "images": args.images,
                "texts": args.texts,
                "large_px": args.large_px,
                "repeat": args.repeat,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cuda_available": torch.cuda.is_available(),
            },
            "devices": by_device,
            "notes": [
                "In process, no server: Pipeline.process_batch in batches of the device's default batch "
                "size; plain loop: decode -> preprocess -> forward -> top-5 in batches of the forward size.",
                "overlap_on: the next slice decoded (and sampled) in a background thread while the model "
                "runs this one; overlap_off: the same work in turn. Best round of each counts.",
                "Shared machine: compare within one run; see machine.loadavg_1_5_15.",
            ],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
