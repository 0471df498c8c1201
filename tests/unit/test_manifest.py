"""Manifest parsing: three formats, line numbers, resuming, and bad lines as failed entries."""

from __future__ import annotations

import pytest

from conveyor.errors import InvalidInput
from conveyor.inputs import manifest


def entries(text: str, fmt: str, skip: int = 0) -> list[tuple[int, manifest.Entry | None]]:
    return list(manifest.parse(text.encode().splitlines(), fmt, skip=skip))


def test_jsonl_names_default_to_the_last_path_segment_and_bad_lines_are_failed_entries() -> None:
    text = (
        '{"uri": "https://h/a/b.jpg?x=1", "name": "first"}\n\n{"url": "s3://bk/k/c.png"}\n'
        'not json\n[1]\n{"uri": "ftp://x/y"}\n'
    )
    got = entries(text, "jsonl")
    assert [n for n, _ in got] == [1, 2, 3, 4, 5, 6]
    first, blank, second, bad_json, not_object, bad_scheme = (e for _, e in got)
    assert first == manifest.Entry("first", "https://h/a/b.jpg?x=1")
    assert blank is None
    assert second == manifest.Entry("c.png", "s3://bk/k/c.png")
    assert bad_json is not None and bad_json.error is not None and "line 4: not JSON" in bad_json.error
    assert not_object is not None and "not a JSON object" in str(not_object.error)
    assert bad_scheme is not None and "not an http(s):// URL" in str(bad_scheme.error)


def test_csv_by_header_and_text_with_comments() -> None:
    got = entries("name,uri\nx,http://h/1.jpg\n,http://h/2.jpg\n", "csv")
    assert [e for _, e in got] == [
        None,
        manifest.Entry("x", "http://h/1.jpg"),
        manifest.Entry("2.jpg", "http://h/2.jpg"),
    ]
    got = entries("# a comment\nhttp://h/dir/\nhttps://user:pw@h/x\ns3://bucket/\n", "text")
    assert got[0] == (1, None)
    assert got[1][1] == manifest.Entry("dir", "http://h/dir/")
    assert "credentials" in str(got[2][1].error if got[2][1] else "")
    assert "not an s3://bucket/key object" in str(got[3][1].error if got[3][1] else "")


def test_skip_resumes_after_the_lines_already_listed() -> None:
    text = "".join(f"http://h/{i}\n" for i in range(10))
    assert [n for n, _ in entries(text, "text", skip=7)] == [8, 9, 10]
    csv_text = "uri\n" + "".join(f"http://h/{i}\n" for i in range(5))
    resumed = entries(csv_text, "csv", skip=3)  # the header is read again, not listed again
    assert [(n, e.ref if e else None) for n, e in resumed] == [
        (4, "http://h/2"),
        (5, "http://h/3"),
        (6, "http://h/4"),
    ]


def test_format_detection_and_first_line_check() -> None:
    assert manifest.detect_format("anything", None, filename="/x/list.CSV") == "csv"
    assert manifest.detect_format('{"uri": "http://h/a"}') == "jsonl"
    assert manifest.detect_format("name,uri") == "csv"
    assert manifest.detect_format("http://h/a") == "text"
    with pytest.raises(InvalidInput, match="format"):
        manifest.detect_format("x", "yaml")
    with pytest.raises(InvalidInput, match="no `uri` column"):
        manifest.check_first_line("name,path", "csv", "m")
    with pytest.raises(InvalidInput, match="not JSON"):
        manifest.check_first_line("{oops", "jsonl", "m")
    manifest.check_first_line('{"uri": "http://h/a"}', "jsonl", "m")
