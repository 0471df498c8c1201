"""``text-embedding`` end to end on a real server: sensible similarities, batching, explain."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import Server, start_server
from tests.helpers.api import all_items, finished, submit

pytest.importorskip("sentence_transformers", reason="the conveyor[ml] extra is not installed")

JOBS = "/api/v2/jobs/"
SENTENCES = {
    "cat": "A cat sits on the mat.",
    "kitten": "A kitten is resting on a rug.",
    "stocks": "Stock prices fell sharply today.",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server: Server = start_server(tmp_path_factory.mktemp("embeddings"), workers=1)
    try:
        with server.client() as c:
            yield c
    finally:
        server.stop()


def run(
    client: httpx.Client, inputs: list[dict[str, str]], **body: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    job = submit(client, name="embed", pipeline="text-embedding", inputs=inputs, **body)
    done = finished(client, job["id"], timeout=180)
    items = all_items(client, done["id"])
    return done, {item["name"]: item for item in items}


def test_similar_sentences_are_close_and_unrelated_ones_far(client: httpx.Client) -> None:
    inputs = [{"name": key, "kind": "text", "data": text} for key, text in SENTENCES.items()]
    inputs.append(
        {"name": "as-base64", "kind": "base64", "data": base64.b64encode(SENTENCES["cat"].encode()).decode()}
    )
    inputs.append({"name": "not-utf8", "kind": "base64", "data": base64.b64encode(b"\xff\xfe\xfa").decode()})
    job, items = run(client, inputs, config={"batch_size": 2})  # several batches in one chunk
    assert job["status"] == "SUCCESS" and (job["completed"], job["failed"]) == (4, 1)
    vectors = {name: np.array(items[name]["result"]["embedding"]) for name in (*SENTENCES, "as-base64")}
    for name, vector in vectors.items():
        assert vector.shape == (384,) and items[name]["result"]["dimensions"] == 384
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-3
    close = float(vectors["cat"] @ vectors["kitten"])
    far = float(vectors["cat"] @ vectors["stocks"])
    assert 0.5 < close < 0.8, close  # ≈ 0.66 for all-MiniLM-L6-v2
    assert -0.1 < far < 0.2, far  # ≈ 0.06
    assert float(vectors["cat"] @ vectors["as-base64"]) > 0.9999  # same text, same vector
    assert items["not-utf8"]["status"] == "FAILURE" and "not UTF-8 text" in items["not-utf8"]["error"]
    lines = [r["message"] for r in client.get(f"{JOBS}{job['id']}/logs/").json()["results"]]
    assert any("text-embedding" in line and "model loaded in" in line for line in lines), lines


def test_explain_gives_per_token_importance(client: httpx.Client) -> None:
    job, items = run(client, [{"name": "cat", "kind": "text", "data": SENTENCES["cat"]}], explain=True)
    assert job["status"] == "SUCCESS"
    importance = items["cat"]["result"]["token_importance"]
    tokens = [entry["token"] for entry in importance]
    assert tokens == ["a", "cat", "sits", "on", "the", "mat", "."]
    weight = {entry["token"]: entry["importance"] for entry in importance}
    assert all(value >= 0 for value in weight.values())
    # Leaving out the content words moves the sentence more than leaving out the article.
    assert weight["cat"] > weight["a"] and weight["mat"] > weight["the"]


def test_explain_is_refused_where_unsupported_and_text_is_accepted_only_here(client: httpx.Client) -> None:
    response = client.post(
        JOBS,
        json={
            "name": "x",
            "pipeline": "digits",
            "explain": True,
            "inputs": [{"kind": "base64", "data": "AA=="}],
        },
    )
    assert response.status_code == 400 and "does not support explain" in response.json()["message"]
