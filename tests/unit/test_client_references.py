"""The client's builders for jobs by reference and the bodies it sends (fetch, output, manifests).

The bodies are read off the wire by an httpx transport standing in for the server, since the
``output`` field is served by another part of the server than this one's tests start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.client import (
    ConveyorClient,
    manifest_file,
    manifest_format_of,
    manifest_input,
    reference_input,
    s3_input,
    url_input,
)


def recording_client() -> tuple[ConveyorClient, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"id": 1, "status": "PENDING", "total": 0})

    return ConveyorClient("http://conveyor.test", "key", transport=httpx.MockTransport(answer)), sent


def test_reference_input_picks_the_kind_by_scheme() -> None:
    assert reference_input("s3://b/prefix/") == s3_input("s3://b/prefix/")
    assert reference_input("https://h/a.jpg", "a") == url_input("https://h/a.jpg", "a")
    assert reference_input("http://h/a.jpg")["kind"] == "url"
    with pytest.raises(ValueError, match="not an http"):
        reference_input("/local/path.jpg")


def test_manifest_file_is_sent_inline_with_its_format_from_the_suffix(tmp_path: Path) -> None:
    for name, fmt in (("a.jsonl", "jsonl"), ("b.NDJSON", "jsonl"), ("c.csv", "csv"), ("d.txt", "text")):
        path = tmp_path / name
        path.write_text("https://h/1.jpg\n")
        assert manifest_file(path) == {
            "name": name,
            "kind": "manifest",
            "data": "https://h/1.jpg\n",
            "format": fmt,
        }
    odd = tmp_path / "list"
    odd.write_text('{"uri": "s3://b/k"}\n')
    assert "format" not in manifest_file(odd)  # the server detects it from the first line
    assert manifest_file(odd, format="jsonl", name="mine")["format"] == "jsonl"
    assert manifest_format_of("list.csv?sig=1") == "csv" and manifest_format_of("list.json") is None


def test_submit_sends_fetch_and_output_only_when_given(tmp_path: Path) -> None:
    client, sent = recording_client()
    with client:
        client.submit("digits", [url_input("https://h/7.png")])
        client.submit("digits", [url_input("https://h/7.png")], fetch="at_submit", output="s3://out/run-1/")
        client.submit("digits", [url_input("https://h/7.png")], output={"uri": "file:///tmp/out/"})
    plain, strict, local = sent
    assert "fetch" not in plain and "output" not in plain  # older servers keep working
    assert (strict["fetch"], strict["output"]) == ("at_submit", {"uri": "s3://out/run-1/"})
    assert local["output"] == {"uri": "file:///tmp/out/"}


def test_submit_references_and_manifests(tmp_path: Path) -> None:
    local = tmp_path / "list.csv"
    local.write_text("uri\nhttps://h/1.jpg\n")
    client, sent = recording_client()
    with client:
        client.submit_references("imagenet-classifier", ["s3://photos/2026/"], output="s3://out/")
        client.submit_references("digits", ["https://h/1.png", "s3://b/k.png"])
        client.submit_manifest("digits", "https://h/list.txt")
        client.submit_manifest("digits", local, fetch="by_reference")
    prefix, pair, address, inline = sent
    assert prefix["inputs"] == [{"kind": "s3", "data": "s3://photos/2026/"}]
    assert prefix["name"] == "imagenet-classifier: s3://photos/2026/"  # a listing is named after it
    assert prefix["output"] == {"uri": "s3://out/"}
    assert [i["kind"] for i in pair["inputs"]] == ["url", "s3"] and pair["name"] == "digits: 2 input(s)"
    assert address["inputs"] == [{"kind": "manifest", "data": "https://h/list.txt"}]
    assert inline["inputs"] == [
        {"kind": "manifest", "data": "uri\nhttps://h/1.jpg\n", "format": "csv", "name": "list.csv"}
    ]
    assert manifest_input("s3://b/list.jsonl", format="jsonl") == {
        "name": None,
        "kind": "manifest",
        "data": "s3://b/list.jsonl",
        "format": "jsonl",
    }
