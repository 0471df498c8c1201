"""``imagenet-classifier`` end to end on a real server: real photos, labels, samples, saliency maps."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import Server, start_server
from tests.helpers.api import all_items, finished, submit

pytest.importorskip("torch", reason="the conveyor[ml] extra is not installed")
from conveyor import photos  # after the skip: needs scikit-image

JOBS = "/api/v2/jobs/"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One worker: the model loads once for the whole module.
    started = start_server(tmp_path_factory.mktemp("imagenet"), workers=1)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def b64(name: str, data: bytes) -> dict[str, str]:
    return {"name": name, "kind": "base64", "data": base64.b64encode(data).decode()}


def run(client: httpx.Client, inputs: list[dict[str, str]], **body: Any) -> tuple[dict[str, Any], list[Any]]:
    job = submit(client, name="imagenet", pipeline="imagenet-classifier", inputs=inputs, **body)
    done = finished(client, job["id"], timeout=180)
    items = all_items(client, done["id"])
    return done, items


@pytest.fixture(scope="module")
def classified(client: httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """One job over a PNG cat, a JPEG espresso and bytes that are no image, shared by the tests below."""
    cat, coffee = photos.bundled(limit=2)
    inputs = [
        b64(cat.name, cat.data),
        b64("coffee.jpg", photos.as_jpeg(coffee).data),
        b64("broken.jpg", b"\xff\xd8 not a jpeg"),
    ]
    job, items = run(client, inputs, config={"top_k": 5})
    return job, {item["name"]: item for item in items}


def test_real_photos_get_the_right_labels(classified: tuple[dict[str, Any], dict[str, Any]]) -> None:
    job, items = classified
    assert job["status"] == "SUCCESS"  # one bad input in three stays within the failure policy
    assert (job["completed"], job["failed"]) == (2, 1)
    cat = items["chelsea.png"]["result"]
    assert [entry["class_id"] for entry in cat["top_k"]][:1] == [285]
    assert cat["label"] == "Egyptian cat" and cat["score"] > 0.5
    assert len(cat["top_k"]) == 5
    assert {281, 282} & {entry["class_id"] for entry in cat["top_k"]}  # tabby / tiger cat next
    scores = [entry["score"] for entry in cat["top_k"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0001
    coffee = items["coffee.jpg"]["result"]
    assert (coffee["class_id"], coffee["label"]) == (967, "espresso")


def test_a_corrupt_image_fails_alone_with_a_clear_error(
    classified: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    _, items = classified
    broken = items["broken.jpg"]
    assert broken["status"] == "FAILURE"
    assert broken["result"] is None
    assert "not a readable image" in broken["error"]


def test_model_load_time_is_in_the_logs_and_stage_params(
    client: httpx.Client, classified: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    job, _ = classified
    torch = pytest.importorskip("torch")
    device = "cuda:0" if torch.cuda.is_available() else "cpu"  # CONVEYOR_DEVICE=auto, the default
    lines = [r["message"] for r in client.get(f"{JOBS}{job['id']}/logs/").json()["results"]]
    assert any(f"imagenet-classifier v1 on {device} (model loaded in" in line for line in lines), lines
    (stage,) = [s for s in job["progress"]["stages"] if s["key"] == "classify"]
    params = {p["name"]: p["value"] for p in stage["params"]}
    assert params["model_load_ms"] > 0
    assert params["model_warm"] is False
    assert params["device"] == device


def test_an_explicit_cuda_without_a_gpu_fails_the_items_with_the_reason(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    server = start_server(
        tmp_path_factory.mktemp("imagenet-cuda"), workers=1, extra_env={"CONVEYOR_DEVICE": "cuda"}
    )
    try:
        with server.client() as other:
            cat, _ = photos.bundled(limit=2)
            job, items = run(other, [b64(cat.name, cat.data)])
            lines = [r["message"] for r in other.get(f"{JOBS}{job['id']}/logs/").json()["results"]]
    finally:
        server.stop()
    assert job["status"] == "FAILURE" and job["failed"] == 1
    (item,) = items
    assert "pipeline failed to load: CONVEYOR_DEVICE=cuda but torch" in item["error"]
    assert "set CONVEYOR_DEVICE=auto or cpu" in item["error"]
    assert any("failed to load" in line and "no usable GPU" in line for line in lines), lines


def test_each_image_gets_a_sample_thumbnail(
    client: httpx.Client, classified: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    job, items = classified
    for name in ("chelsea.png", "coffee.jpg"):
        response = client.get(f"{JOBS}{job['id']}/items/{items[name]['id']}/sample")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(response.content)) as thumb:
            assert thumb.format == "JPEG"
            assert max(thumb.size) == 128  # both photos are larger than that
    missing = client.get(f"{JOBS}{job['id']}/items/{items['broken.jpg']['id']}/sample")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert "has no sample" in missing.json()["message"]
    # Without explain there is no explanation.
    none = client.get(f"{JOBS}{job['id']}/items/{items['chelsea.png']['id']}/explanation")
    assert none.status_code == 404 and none.json()["error"] == "not_found"


def test_artifact_routes_are_scoped_like_jobs(
    server: Server, classified: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    job, items = classified
    item_id = items["chelsea.png"]["id"]
    elsewhere = server.create_key(project="imagenet-elsewhere", name="elsewhere")
    with server.client(elsewhere) as other:
        response = other.get(f"{JOBS}{job['id']}/items/{item_id}/sample")
        assert response.status_code == 404 and response.json()["message"] == f"Job {job['id']} not found."
    anonymous = httpx.get(f"{server.url}{JOBS}{job['id']}/items/{item_id}/sample")
    assert anonymous.status_code == 401
    with server.client() as owner:
        wrong_item = owner.get(f"{JOBS}{job['id']}/items/999999/sample")
        assert wrong_item.status_code == 404 and "Item 999999 not found" in wrong_item.json()["message"]


def test_explain_stores_a_saliency_map_per_image(client: httpx.Client) -> None:
    cat = photos.bundled(limit=1)[0]
    job, items = run(client, [b64(cat.name, cat.data)], explain=True, config={"top_k": 3})
    assert job["status"] == "SUCCESS" and job["explain"] is True
    (item,) = items
    assert item["result"]["class_id"] == 285 and len(item["result"]["top_k"]) == 3
    assert "saliency" in item["result"]["explanation"]["method"]
    response = client.get(f"{JOBS}{job['id']}/items/{item['id']}/explanation")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as heat:
        assert heat.format == "PNG" and heat.mode == "L" and heat.size == (224, 224)
        pixels = np.asarray(heat, dtype=np.float32)
    assert pixels.max() >= 250  # stretched to the full range
    assert pixels.std() > 20  # not a flat image
    # A real saliency map is uneven: the brightest tenth of the pixels holds well over a tenth of the mass.
    ordered = np.sort(pixels.ravel())[::-1]
    assert ordered[: ordered.size // 10].sum() > 0.18 * ordered.sum()
    sample = client.get(f"{JOBS}{job['id']}/items/{item['id']}/sample")
    assert sample.status_code == 200
    # The module's one worker kept the model from the first job: the log says so and when it loaded.
    lines = [r["message"] for r in client.get(f"{JOBS}{job['id']}/logs/").json()["results"]]
    assert any("model already warm; it loaded in" in line for line in lines), lines


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": "5"}, "top_k"),
        ({"top_k": 1001}, "top_k"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_options_are_refused_at_submission(
    client: httpx.Client, config: dict[str, Any], message: str
) -> None:
    cat = photos.bundled(limit=1)[0]
    response = client.post(
        JOBS,
        json={
            "name": "bad",
            "pipeline": "imagenet-classifier",
            "inputs": [b64(cat.name, cat.data)],
            "config": config,
        },
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_input" and message in response.json()["message"]


def test_text_inputs_are_refused(client: httpx.Client) -> None:
    response = client.post(
        JOBS,
        json={
            "name": "bad",
            "pipeline": "imagenet-classifier",
            "inputs": [{"kind": "text", "data": "a cat"}],
        },
    )
    assert response.status_code == 400 and "accepts inputs of kind base64" in response.json()["message"]


def test_any_image_classifier_gets_samples_from_the_worker(client: httpx.Client) -> None:
    """`digits` makes no thumbnails itself: the worker makes them for image classifiers."""
    from conveyor.pipelines.digits import holdout_pngs

    ((name, data, _),) = holdout_pngs(limit=1)
    job = submit(client, name="digits", pipeline="digits", inputs=[b64(name, data)])
    job = finished(client, job["id"], timeout=120)
    (item,) = all_items(client, job["id"])
    sample = client.get(f"{JOBS}{job['id']}/items/{item['id']}/sample")
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(sample.content)) as thumb:
        assert thumb.size == (32, 32)  # already smaller than 128 px: kept at its size
