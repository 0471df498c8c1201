"""``conveyor demo-ml``: the image classifier over real photos bundled in installed packages.

Starts ``conveyor serve`` (two workers, chunks small enough that both share the job), submits
the bundled photos to ``imagenet-classifier`` with ``explain=true``, follows the job with the
progress bar, prints the labels, model load times and where each thumbnail and saliency map is
served, saves them under the data directory, and stops the server with SIGTERM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from conveyor.cli.common import err, out
from conveyor.cli.progress import print_summary, watch
from conveyor.client import ConveyorClient, bytes_input
from conveyor.demo import DataDirOpt, PortOpt, WorkersOpt, with_demo_server

TOP_K = 5


def demo_ml(
    workers: WorkersOpt = 2,
    port: PortOpt = 0,
    data_dir: DataDirOpt = Path("conveyor-data"),
) -> None:
    """ML demo: classify real photos bundled in installed packages with `imagenet-classifier`.

    Needs the conveyor[ml] extra. Starts `conveyor serve`, submits the photos with explain=true,
    prints top-1 labels, whether each known photo's class is in its top 5, the model load time and
    where thumbnails and saliency maps are served; saves them under DATA_DIR/demo-ml/. Exits 0
    only if the job succeeded, every known photo was recognised and the server stopped cleanly.
    """
    raise typer.Exit(run_demo_ml(workers=workers, port=port, data_dir=data_dir))


def run_demo_ml(*, workers: int, port: int, data_dir: Path) -> int:
    """Returns the exit code: 0 if the job succeeded, every photo with a known class has it in its
    top 5, every photo has its sample and saliency map, and the server stopped cleanly."""
    try:
        from conveyor import photos
        from conveyor.pipelines import imagenet  # noqa: F401 - fails early without the [ml] extra
    except ImportError as exc:
        err.print(f"[red]The ML demo needs the conveyor[ml] extra:[/] {escape(str(exc))}")
        return 1
    bundled = photos.bundled()

    def classify(client: ConveyorClient) -> bool:
        job = client.submit(
            "imagenet-classifier",
            [bytes_input(photo.data, photo.name) for photo in bundled],
            name=f"demo-ml: {len(bundled)} bundled photos",
            explain=True,
            config={"top_k": TOP_K},
        )
        err.print(
            f"Submitted job {job['id']}: {job['total']} photos to `imagenet-classifier` (explain=true)."
        )
        final = watch(client, job)
        items = client.items(final["id"], limit=len(bundled))["results"]
        folder = data_dir.resolve() / "demo-ml" / f"job-{final['id']}"
        saved = save_artifacts(client, final["id"], items, folder)
        correct = report(client.url, final, items, bundled, saved)
        return final["status"] == "SUCCESS" and correct and len(saved) == len(bundled)

    # Chunks small enough that every worker gets a share of the photos.
    chunk_size = max(1, -(-len(bundled) // max(1, workers)))
    return with_demo_server(
        "ML demo",
        classify,
        data_dir=data_dir,
        port=port,
        workers=workers,
        env={"CONVEYOR_CHUNK_SIZE": str(chunk_size)},
    )


def save_artifacts(
    client: ConveyorClient, job_id: int, items: list[dict[str, Any]], folder: Path
) -> dict[str, tuple[Path, Path]]:
    """Fetch every item's sample and saliency map over the API and write them to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[str, tuple[Path, Path]] = {}
    for item in items:
        if item["status"] != "SUCCESS":
            continue
        stem = item["name"].rsplit(".", 1)[0]
        sample = folder / f"{stem}.sample.jpg"
        saliency = folder / f"{stem}.saliency.png"
        sample.write_bytes(client.sample(job_id, item["id"]))
        saliency.write_bytes(client.explanation(job_id, item["id"]))
        saved[item["name"]] = (sample, saliency)
    return saved


def report(
    url: str,
    job: dict[str, Any],
    items: list[dict[str, Any]],
    bundled: list[Any],
    saved: dict[str, tuple[Path, Path]],
) -> bool:
    print_summary(job)
    expected = {photo.name: photo for photo in bundled}
    table = Table(box=None, header_style="bold", title="labels", title_justify="left")
    for column in ("Photo", "What it is", "Top-1", "Score", f"Expected in top {TOP_K}"):
        table.add_column(column)
    all_right = True
    for item in items:
        photo = expected[item["name"]]
        result = item["result"] or {}
        ids = [entry["class_id"] for entry in result.get("top_k", [])]
        if photo.expected is None:
            verdict = "-"
        elif photo.expected in ids:
            verdict = f"[green]yes[/] ({photo.expected})"
        else:
            verdict = f"[red]no[/] ({photo.expected})"
            all_right = False
        top1 = result.get("label", item.get("error") or "")
        score = f"{result['score']:.2f}" if "score" in result else ""
        table.add_row(photo.name, photo.what, escape(str(top1)), score, verdict)
    out.print(table)
    for stage in job["progress"]["stages"]:
        params = {p["name"]: p["value"] for p in stage.get("params", [])}
        if "model_load_ms" in params:
            out.print(f"Model load time: {params['model_load_ms']} ms (worker {params.get('worker')})")
    base = f"{url}/api/v2/jobs/{job['id']}/items"
    out.print(
        f"While the server runs, thumbnails are at {base}/<item id>/sample and saliency maps at "
        f"{base}/<item id>/explanation (item ids: {', '.join(str(i['id']) for i in items)})."
    )
    if saved:
        folder = next(iter(saved.values()))[0].parent
        out.print(
            f"Saved {len(saved)} thumbnails (*.sample.jpg) and saliency maps (*.saliency.png) in {folder}"
        )
    return all_right
