"""conveyor.outputs on its own: the submit-time checks of a file:// output, the atomic file sink,
the shard encoding and the worker's merge of stored records with fresh outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.domain.work import ItemOutcome
from conveyor.errors import InputUnavailable, InvalidInput
from conveyor.outputs import OutputSink, encode_shard, shard_name, validate_output, with_retries
from conveyor.settings import Settings
from conveyor.worker.shards import merge


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def test_a_file_output_defaults_under_the_data_dir_and_is_created(settings: Settings) -> None:
    root = settings.data_dir / "outputs"
    spec = validate_output({"uri": (root / "run 1").as_uri()}, settings)
    assert spec == {"uri": (root / "run 1").resolve().as_uri() + "/"}
    assert (root / "run 1").is_dir()


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/",
        "file:///tmp/../etc/x/",
        "relative/dir",
        "http://host/x/",
        "file://host/tmp/x/",
        "s3:///x/",
        "file:///tmp/a%00b/",
    ],
)
def test_bad_outputs_are_invalid_input(settings: Settings, uri: str) -> None:
    with pytest.raises(InvalidInput):
        validate_output({"uri": uri}, settings)


@pytest.mark.parametrize(
    "spec", [None, "s3://b/", {"url": "s3://b/"}, {"uri": 3}, {"uri": "s3://b/", "x": 1}]
)
def test_the_output_spec_shape_is_checked(settings: Settings, spec: object) -> None:
    with pytest.raises(InvalidInput):
        validate_output(spec, settings)


def test_a_dotdot_escape_of_the_root_is_refused(settings: Settings) -> None:
    root = settings.data_dir / "outputs"
    with pytest.raises(InvalidInput, match="outside"):
        validate_output({"uri": root.as_uri() + "/a/../../elsewhere/"}, settings)
    assert not (settings.data_dir / "elsewhere").exists()


def test_an_unwritable_directory_is_unavailable(settings: Settings) -> None:
    root = settings.data_dir / "outputs"
    root.mkdir(parents=True)
    (root / "taken").write_text("a file, not a directory")
    with pytest.raises(InputUnavailable):
        validate_output({"uri": (root / "taken").as_uri()}, settings)


def test_the_file_sink_replaces_whole_files_and_cleans_partials(tmp_path: Path, settings: Settings) -> None:
    sink = OutputSink.for_uri(tmp_path.as_uri() + "/", settings)
    sink.write_shard(shard_name(1), b'{"seq":0}\n')
    sink.write_shard(shard_name(1), b'{"seq":0}\n{"seq":1}\n')  # a rewrite: the new content, whole
    sink.write_manifest({"shards": [shard_name(1)]})
    (tmp_path / ".predictions-00002.jsonl.abc.tmp").write_bytes(b'{"se')  # a writer killed mid-write
    assert sink.remove_partial() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "predictions-00001.jsonl"]
    assert (tmp_path / "predictions-00001.jsonl").read_bytes() == b'{"seq":0}\n{"seq":1}\n'
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"shards": ["predictions-00001.jsonl"]}


def test_encode_shard_orders_by_seq_one_line_each() -> None:
    data, lines = encode_shard([{"seq": 2, "name": "é"}, {"seq": 1, "name": "a\nb"}])
    assert lines == 2
    assert [json.loads(x)["seq"] for x in data.decode().splitlines()] == [1, 2]
    assert data.endswith(b"\n")


def test_merge_applies_fresh_outcomes_and_drops_unfinished_records() -> None:
    def record(item_id: int, status: str) -> dict[str, object]:
        return {"item_id": item_id, "seq": item_id, "status": status, "result": None, "error": None}

    stored = [record(1, "SUCCESS"), record(2, "PENDING"), record(3, "PENDING"), record(4, "FAILURE")]
    merged = merge(stored, [ItemOutcome(2, True, {"ok": 1}), ItemOutcome(4, True, {"ok": 2})])
    assert [(r["item_id"], r["status"], r["result"]) for r in merged] == [
        (1, "SUCCESS", None),
        (2, "SUCCESS", {"ok": 1}),
        (4, "SUCCESS", {"ok": 2}),  # a retried item's new outcome replaces its stored failure
    ]


def test_with_retries_gives_up_after_its_attempts() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("sink down")
        return "ok"

    assert with_retries(flaky, attempts=3, backoff=0.1, sleep=waits.append) == "ok"
    assert waits == [0.1, 0.2]
    with pytest.raises(OSError):
        with_retries(lambda: (_ for _ in ()).throw(OSError("still down")), attempts=2, sleep=waits.append)
