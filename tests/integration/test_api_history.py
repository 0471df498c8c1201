"""Job history (``GET /api/v2/jobs/``): filters, ordering, offset and cursor pagination.

One corpus of jobs in known end states is built per module, all named with one unique tag,
so every query is narrowed with ``search=<tag>`` (the shared server keeps other jobs too).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from conveyor.pipelines.digits import holdout_pngs
from tests.helpers import TERMINAL_STATUSES as TERMINAL
from tests.helpers import Server, text_inputs
from tests.helpers.api import (
    JOBS,
    assert_error,
    b64,
    finished,
    history,
    submit,
    ts,
    unique,
)

ORDERINGS = ("created_at", "updated_at", "status", "duration", "name")


@dataclass
class Corpus:
    tag: str
    jobs: dict[str, dict[str, Any]]  # short name -> final job document
    project_id: int
    default_project_id: int
    project_key_prefix: str
    digits_pipeline_id: int

    def ids(self, *names: str) -> set[int]:
        return {self.jobs[n]["id"] for n in names}

    def ids_where(self, predicate: Callable[[dict[str, Any]], bool]) -> set[int]:
        return {j["id"] for j in self.jobs.values() if predicate(j)}

    @property
    def all_ids(self) -> set[int]:
        return {j["id"] for j in self.jobs.values()}


@pytest.fixture
def client(shared_server: Server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def corpus(shared_server: Server) -> Corpus:
    tag = unique("hist")
    project_slug = unique("histproj")
    project_key = shared_server.create_key(role="member", project=project_slug, name="history")
    jobs: dict[str, dict[str, Any]] = {}
    with shared_server.client() as c:
        jobs["alpha"] = submit(c, name=f"{tag}-c-alpha", n=2)
        jobs["beta"] = submit(c, name=f"{tag}-a-beta", n=3, config={"item_seconds": 0.1})
        jobs["gamma"] = submit(c, name=f"{tag}-e-gamma", n=2, config={"fail_names": ["item-0", "item-1"]})
        jobs["delta"] = submit(c, name=f"{tag}-b-delta", n=1, start_now=False)
        jobs["epsilon"] = submit(c, name=f"{tag}-d-epsilon", n=1, start_now=False)
        assert c.post(f"{JOBS}{jobs['epsilon']['id']}/cancel/").status_code == 200
        digits_inputs = [
            {"name": name, "kind": "base64", "data": b64(png)} for name, png, _ in holdout_pngs(limit=3)
        ]
        jobs["digits"] = submit(c, name=f"{tag}-f-digits", pipeline="digits", inputs=digits_inputs)
        jobs["timeout"] = submit(
            c, name=f"{tag}-g-timeout", inputs=text_inputs(20), timeout=300, config={"item_seconds": 0.2}
        )
        jobs["percent"] = submit(c, name=f"{tag}-h-100%", n=1)
        jobs["underscore"] = submit(c, name=f"{tag}-h-a_b", n=1)
        jobs["axb"] = submit(c, name=f"{tag}-h-axb", n=1)
        with shared_server.client(project_key) as bound:
            jobs["bound"] = submit(bound, name=f"{tag}-i-bound", n=1)
        for short, job in jobs.items():
            if short == "delta":
                continue
            jobs[short] = finished(c, job["id"], timeout=120)
        jobs["delta"] = c.get(f"{JOBS}{jobs['delta']['id']}/").json()
        digits_pipeline_id = jobs["digits"]["pipeline"]["id"]
        default_project_id = jobs["alpha"]["project"]["id"]
    expected = {
        "alpha": "SUCCESS",
        "beta": "SUCCESS",
        "gamma": "FAILURE",
        "delta": "CREATED",
        "epsilon": "REVOKED",
        "digits": "SUCCESS",
        "timeout": "TIMEDOUT",
        "percent": "SUCCESS",
        "underscore": "SUCCESS",
        "axb": "SUCCESS",
        "bound": "SUCCESS",
    }
    assert {k: j["status"] for k, j in jobs.items()} == expected
    return Corpus(
        tag,
        jobs,
        jobs["bound"]["project"]["id"],
        default_project_id,
        project_key.split(".")[0],
        digits_pipeline_id,
    )


def ids_of(client: httpx.Client, corpus: Corpus, **params: Any) -> list[int]:
    page = history(client, **{"search": corpus.tag, "limit": 1000, **params})
    assert page["count"] == len(page["results"])
    return [j["id"] for j in page["results"]]


# --------------------------------------------------------------------------- filters
def test_without_filters_every_job_is_listed(client: httpx.Client, corpus: Corpus) -> None:
    assert set(ids_of(client, corpus)) == corpus.all_ids
    whole = history(client, search=corpus.tag)
    assert (whole["count"], whole["count_exact"]) == (len(corpus.jobs), True)


@pytest.mark.parametrize(
    ("status", "wanted"),
    [
        ("SUCCESS", {"SUCCESS"}),
        ("FAILURE", {"FAILURE"}),
        ("CREATED", {"CREATED"}),
        ("REVOKED", {"REVOKED"}),
        ("TIMEDOUT", {"TIMEDOUT"}),
        ("STARTED", set()),
        ("all", {"SUCCESS", "FAILURE", "CREATED", "REVOKED", "TIMEDOUT"}),
        ("pending", {"CREATED"}),
        ("terminated", set(TERMINAL)),
        ("timedout", {"TIMEDOUT"}),
        ("SUCCESS,REVOKED", {"SUCCESS", "REVOKED"}),
        ("FAILURE, timedout", {"FAILURE", "TIMEDOUT"}),
        ("pending,FAILURE", {"CREATED", "FAILURE"}),
    ],
)
def test_status_filter(client: httpx.Client, corpus: Corpus, status: str, wanted: set[str]) -> None:
    got = ids_of(client, corpus, status=status)
    assert set(got) == corpus.ids_where(lambda j: j["status"] in wanted), status
    assert len(got) == len(set(got))


@pytest.mark.parametrize("status", ["DONE", "SUCCESS,bogus", "succeeded", "COMPLETED"])
def test_unknown_status_filter_is_400(client: httpx.Client, corpus: Corpus, status: str) -> None:
    assert_error(client.get(JOBS, params={"status": status, "search": corpus.tag}), 400)


def test_pipeline_filter_by_slug_and_id(client: httpx.Client, corpus: Corpus) -> None:
    assert set(ids_of(client, corpus, pipeline="digits")) == corpus.ids("digits")
    assert set(ids_of(client, corpus, pipeline=str(corpus.digits_pipeline_id))) == corpus.ids("digits")
    assert set(ids_of(client, corpus, pipeline="test-delay")) == corpus.all_ids - corpus.ids("digits")
    delay_id = corpus.jobs["alpha"]["pipeline"]["id"]
    assert set(ids_of(client, corpus, pipeline=str(delay_id))) == corpus.all_ids - corpus.ids("digits")
    assert ids_of(client, corpus, pipeline="no-such-pipeline") == []


def test_project_filter(client: httpx.Client, corpus: Corpus) -> None:
    assert set(ids_of(client, corpus, project=corpus.project_id)) == corpus.ids("bound")
    assert set(ids_of(client, corpus, project=corpus.default_project_id)) == corpus.all_ids - corpus.ids(
        "bound"
    )


def test_job_type_filter(client: httpx.Client, corpus: Corpus) -> None:
    assert set(ids_of(client, corpus, job_type_key="ml")) == corpus.all_ids
    assert ids_of(client, corpus, job_type_key="data_export") == []


def test_created_range_filters(client: httpx.Client, corpus: Corpus) -> None:
    ordered = sorted(corpus.jobs.values(), key=lambda j: (ts(j["created_at"]), j["id"]))
    pivot = ordered[len(ordered) // 2]
    stamp = ts(pivot["created_at"])
    later = {j["id"] for j in ordered if ts(j["created_at"]) >= stamp}
    earlier = {j["id"] for j in ordered if ts(j["created_at"]) < stamp}
    assert later and earlier
    assert set(ids_of(client, corpus, created_after=stamp.isoformat())) == later
    assert set(ids_of(client, corpus, created_before=stamp.isoformat())) == earlier
    # "Z" and a naive timestamp both mean UTC.
    zulu = stamp.isoformat().replace("+00:00", "Z")
    assert set(ids_of(client, corpus, created_after=zulu)) == later
    elsewhere = stamp.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert elsewhere.endswith("+02:00")
    assert set(ids_of(client, corpus, created_after=elsewhere)) == later
    naive = stamp.replace(tzinfo=None).isoformat()
    assert set(ids_of(client, corpus, created_before=naive)) == earlier
    last = ts(ordered[-1]["created_at"])
    first = ts(ordered[0]["created_at"])
    window = ids_of(client, corpus, created_after=first.isoformat(), created_before=stamp.isoformat())
    assert set(window) == earlier
    assert ids_of(client, corpus, created_after=last.isoformat(), created_before=first.isoformat()) == []
    assert_error(client.get(JOBS, params={"created_after": "yesterday"}), 422)


def test_search_is_a_case_insensitive_literal_substring(client: httpx.Client, corpus: Corpus) -> None:
    assert set(ids_of(client, corpus)) == corpus.all_ids
    upper = history(client, search=corpus.tag.upper(), limit=1000)
    assert {j["id"] for j in upper["results"]} == corpus.all_ids
    assert set(ids_of(client, corpus, search=f"{corpus.tag}-C-ALPHA")) == corpus.ids("alpha")
    assert set(ids_of(client, corpus, search=f"{corpus.tag}-h-a_b")) == corpus.ids("underscore")
    assert set(ids_of(client, corpus, search=f"{corpus.tag}-h-100%")) == corpus.ids("percent")
    assert ids_of(client, corpus, search=f"{corpus.tag}%") == []
    assert ids_of(client, corpus, search=f"{corpus.tag}-_-") == []
    assert set(ids_of(client, corpus, search=f"{corpus.tag}-h-")) == corpus.ids(
        "percent", "underscore", "axb"
    )


def test_submitted_by_filter(client: httpx.Client, shared_server: Server, corpus: Corpus) -> None:
    page = history(client, submitted_by=corpus.project_key_prefix, limit=1000)
    assert [j["id"] for j in page["results"]] == [corpus.jobs["bound"]["id"]]
    owner = shared_server.key.split(".")[0]
    assert set(ids_of(client, corpus, submitted_by=owner)) == corpus.all_ids - corpus.ids("bound")
    assert history(client, submitted_by="nobody-at-all")["count"] == 0


# --------------------------------------------------------------------------- ordering
def _sort_key(job: dict[str, Any], key: str) -> Any:
    if key in ("created_at", "updated_at"):
        return ts(job[key])
    if key == "duration":
        return -1 if job["elapsed_time_ms"] is None else job["elapsed_time_ms"]
    return job[key]


def _expected_order(corpus: Corpus, key: str, descending: bool) -> list[int]:
    ordered = sorted(corpus.jobs.values(), key=lambda j: (_sort_key(j, key), j["id"]), reverse=descending)
    return [j["id"] for j in ordered]


@pytest.fixture(scope="module")
def settled(corpus: Corpus, shared_server: Server) -> Corpus:
    """The corpus as the server reports it now (updated_at may have moved after `finished`)."""
    with shared_server.client() as c:
        for short, job in corpus.jobs.items():
            corpus.jobs[short] = c.get(f"{JOBS}{job['id']}/").json()
    return corpus


@pytest.mark.parametrize("key", ORDERINGS)
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_ordering(client: httpx.Client, settled: Corpus, key: str, descending: bool) -> None:
    ordering = f"-{key}" if descending else key
    page = history(client, search=settled.tag, limit=1000, ordering=ordering)
    got = [j["id"] for j in page["results"]]
    values = [_sort_key(j, key) for j in page["results"]]
    assert values == sorted(values, reverse=descending), (ordering, values)
    assert got == _expected_order(settled, key, descending), ordering


def test_default_ordering_is_newest_first(client: httpx.Client, settled: Corpus) -> None:
    expected = _expected_order(settled, "created_at", True)
    assert ids_of(client, settled) == expected
    # Cursor pages without an explicit ordering follow the same default.
    page = history(client, search=settled.tag, limit=4)
    walked = [j["id"] for j in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        walked += [j["id"] for j in page["results"]]
    assert walked == expected


@pytest.mark.parametrize("ordering", ["bogus", "-bogus", "password", "name;drop table jobs", "created"])
def test_invalid_ordering_is_400(client: httpx.Client, corpus: Corpus, ordering: str) -> None:
    assert_error(client.get(JOBS, params={"ordering": ordering, "search": corpus.tag}), 400)


# --------------------------------------------------------------------------- pagination
def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


def test_limit_offset_pages(client: httpx.Client, settled: Corpus) -> None:
    expected = _expected_order(settled, "name", False)
    url: str | None = None
    params: dict[str, Any] | None = {"search": settled.tag, "ordering": "name", "limit": 3, "offset": 0}
    pages: list[dict[str, Any]] = []
    while True:
        response = client.get(url or JOBS, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["count"] == len(expected)
        pages.append(page)
        if page["next"] is None:
            break
        url, params = page["next"], None
        query = _query(url)
        assert query["offset"] == [str(3 * len(pages))] and query["limit"] == ["3"]
        assert query["search"] == [settled.tag] and query["ordering"] == ["name"]
    assert [j["id"] for p in pages for j in p["results"]] == expected
    assert len(pages) == -(-len(expected) // 3)
    assert pages[0]["previous"] is None
    for index, page in enumerate(pages[1:], start=1):
        assert page["previous"] is not None
        assert _query(page["previous"])["offset"] == [str(3 * (index - 1))]
        back = client.get(page["previous"]).json()
        assert [j["id"] for j in back["results"]] == [j["id"] for j in pages[index - 1]["results"]]
    beyond = history(client, search=settled.tag, ordering="name", limit=3, offset=100)
    assert beyond["results"] == [] and beyond["next"] is None
    assert beyond["count"] == len(expected)


@pytest.mark.parametrize(
    "ordering",
    [
        "-created_at",
        "created_at",
        "name",
        "-name",
        "status",
        "-status",
        "duration",
        "-duration",
        "-updated_at",
    ],
)
def test_cursor_pages_forward_and_back(client: httpx.Client, settled: Corpus, ordering: str) -> None:
    expected = ids_of(client, settled, ordering=ordering)
    assert len(expected) == len(settled.jobs)
    first = history(client, search=settled.tag, ordering=ordering, limit=3)
    assert first["previous"] is None
    forward = [first]
    while forward[-1]["next"]:
        assert "cursor" in _query(forward[-1]["next"]), forward[-1]["next"]
        assert "offset" not in _query(forward[-1]["next"])
        response = client.get(forward[-1]["next"])
        assert response.status_code == 200, response.text
        forward.append(response.json())
        assert len(forward) <= len(expected), "pagination does not end"
    walked = [j["id"] for p in forward for j in p["results"]]
    assert walked == expected, "gaps or duplicates walking forward"
    assert all(len(p["results"]) == 3 for p in forward[:-1])
    assert all(p["count"] == len(expected) for p in forward)

    backward = [forward[-1]]
    while backward[-1]["previous"]:
        response = client.get(backward[-1]["previous"])
        assert response.status_code == 200, response.text
        backward.append(response.json())
        assert len(backward) <= len(expected), "pagination does not end"
    assert [[j["id"] for j in p["results"]] for p in reversed(backward)] == [
        [j["id"] for j in p["results"]] for p in forward
    ], "walking back does not retrace the forward pages"
    # From the first page reached backwards, `next` leads forward again.
    assert backward[-1]["next"] is not None
    again = client.get(backward[-1]["next"]).json()
    assert [j["id"] for j in again["results"]] == [j["id"] for j in forward[1]["results"]]


def _encode(data: Any) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_tampered_cursor_is_400(client: httpx.Client, settled: Corpus) -> None:
    page = history(client, search=settled.tag, ordering="name", limit=3)
    cursor = _query(page["next"])["cursor"][0]
    assert client.get(page["next"]).status_code == 200
    tampered = [
        "garbage!!",
        cursor[:-4],
        cursor[::-1],
        _encode({"hello": "world"}),
        _encode({"k": "name", "v": "x", "i": "not-an-int", "b": False}),
        _encode({"k": "name", "v": ["a", "list"], "i": 1, "b": False}),
        _encode({"k": "name", "v": {"an": "object"}, "i": 1, "b": False}),
        _encode({"k": "password", "v": "x", "i": 1, "b": False}),
        _encode(["not", "an", "object"]),
    ]
    for bad in tampered:
        response = client.get(JOBS, params={"search": settled.tag, "ordering": "name", "cursor": bad})
        assert_error(response, 400)
    # A cursor made for one ordering is refused under another.
    for ordering in ("created_at", "-created_at", "duration"):
        response = client.get(JOBS, params={"search": settled.tag, "ordering": ordering, "cursor": cursor})
        assert_error(response, 400)
    # Well-formed JSON whose value does not fit the ordering's column.
    for ordering, value in (
        ("created_at", "not a date"),
        ("created_at", 5),
        ("created_at", None),
        ("duration", "abc"),
        ("duration", None),
        ("name", None),
        ("name", 12),
    ):
        bad = _encode({"k": ordering, "v": value, "i": 1, "b": False})
        response = client.get(JOBS, params={"search": settled.tag, "ordering": ordering, "cursor": bad})
        assert_error(response, 400)


def test_bad_page_parameters_are_rejected(client: httpx.Client) -> None:
    for params in ({"limit": 0}, {"limit": -1}, {"offset": -1}, {"limit": "ten"}):
        assert_error(client.get(JOBS, params=params), 422)


def test_limit_above_the_maximum_is_capped(server_factory: Callable[..., Server]) -> None:
    server = server_factory(workers=0, extra_env={"CONVEYOR_MAX_PAGE_SIZE": "3"})
    tag = unique("cap")
    with server.client() as c:
        made = [submit(c, name=f"{tag}-{i}", n=5, start_now=False) for i in range(5)]
        page = history(c, search=tag, limit=1000)
        assert page["count"] == 5
        assert len(page["results"]) == 3
        assert page["next"] is not None and _query(page["next"])["limit"] == ["3"]
        rest = c.get(page["next"]).json()
        assert len(page["results"]) + len(rest["results"]) == 5
        assert page["results"][0]["status"] == "CREATED"
        offset_page = history(c, search=tag, limit=1000, offset=0)
        assert len(offset_page["results"]) == 3
        items = c.get(f"{JOBS}{made[0]['id']}/items/", params={"limit": 1000}).json()
        assert items["count"] == 5 and len(items["results"]) == 3 and items["next"] is not None
        rest_items = c.get(items["next"]).json()
        assert [i["seq"] for i in items["results"] + rest_items["results"]] == list(range(5))


def test_updated_before_and_after(client: httpx.Client, settled: Corpus) -> None:
    ordered = sorted(settled.jobs.values(), key=lambda j: (ts(j["updated_at"]), j["id"]))
    stamp: datetime = ts(ordered[len(ordered) // 2]["updated_at"])
    later = {j["id"] for j in ordered if ts(j["updated_at"]) >= stamp}
    assert set(ids_of(client, settled, updated_after=stamp.isoformat())) == later
    assert set(ids_of(client, settled, updated_before=stamp.isoformat())) == settled.all_ids - later
