"""The Modzy dialect's pure translations: statuses, history parameters, sizes, roles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.api.routes.modzy_jobs import _human_size
from conveyor.api.schemas.modzy import (
    MODZY_STATUS,
    MODZY_STATUS_FILTERS,
    ModzyJobCreate,
    history_statuses,
    ordering,
    parse_date,
)
from conveyor.domain.access import Principal
from conveyor.domain.status import ACTIVE, TERMINAL, JobStatus
from conveyor.errors import InvalidInput


def test_every_state_has_a_modzy_name_and_every_name_filters_back() -> None:
    assert set(MODZY_STATUS) == set(JobStatus)
    assert set(MODZY_STATUS.values()) == {
        "OPEN", "SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELED", "TIMEDOUT"
    }  # fmt: skip
    for state, name in MODZY_STATUS.items():
        assert state in MODZY_STATUS_FILTERS[name]
    assert MODZY_STATUS_FILTERS["IN_PROGRESS"] == {JobStatus.STARTED, JobStatus.RETRY}
    # A canceling job can no longer complete: Modzy shows it CANCELED (and finished) at once.
    assert MODZY_STATUS[JobStatus.CANCELING] == "CANCELED"
    assert MODZY_STATUS_FILTERS["CANCELED"] == {JobStatus.REVOKED, JobStatus.CANCELING}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all", frozenset(JobStatus)),
        ("pending", ACTIVE - {JobStatus.CANCELING}),
        ("terminated", TERMINAL | {JobStatus.CANCELING}),
        ("timedout", {JobStatus.TIMEDOUT}),
        ("COMPLETED", {JobStatus.SUCCESS}),
        ("canceled", {JobStatus.REVOKED, JobStatus.CANCELING}),
        ("CANCELING", {JobStatus.CANCELING}),
        ("OPEN,FAILED", {JobStatus.CREATED, JobStatus.FAILURE}),
        ("SUCCESS", {JobStatus.SUCCESS}),
    ],
)
def test_history_status_filter(value: str, expected: frozenset[JobStatus]) -> None:
    assert history_statuses(value) == expected


def test_unknown_status_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="bogus"):
        history_statuses("bogus")


def test_ordering_maps_modzy_sort_keys_and_direction() -> None:
    assert ordering(None, None) == "-created_at"
    assert ordering("createdAt", "asc") == "created_at"
    assert ordering("elapsedTime", "DESC") == "-duration"
    assert ordering("updatedAt", None) == "-updated_at"
    with pytest.raises(InvalidInput):
        ordering("nonsense", None)
    with pytest.raises(InvalidInput):
        ordering("createdAt", "sideways")


def test_dates_are_iso_and_naive_means_utc() -> None:
    assert parse_date("startDate", None) is None
    assert parse_date("startDate", "2026-01-02T03:04:05.678") == datetime(2026, 1, 2, 3, 4, 5, 678000, UTC)
    assert parse_date("endDate", "2026-01-02T03:04:05+01:00") == datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="startDate"):
        parse_date("startDate", "yesterday")


def test_chunk_size_is_written_in_units_modzy_sdk_parses() -> None:
    assert _human_size(1024 * 1024) == "1Mi"
    assert _human_size(3 * 1024) == "3Ki"
    assert _human_size(64) == "64i"


def test_sources_become_one_named_input_each() -> None:
    body = ModzyJobCreate.model_validate(
        {
            "model": {"identifier": "digits", "version": 1},
            "input": {"type": "embedded", "sources": {"a": {"image": "data:x;base64,AAAA"}}},
            "timeout": 5000,
        }
    )
    request = body.to_request(pipeline_id=7)
    assert request.inputs == [{"kind": "base64", "data": "data:x;base64,AAAA", "name": "a"}]
    assert (request.pipeline_id, request.timeout_ms, body.model.version) == (7, 5000, "1")
    for bad in ({"a": {"x": "1", "y": "2"}}, {"a": "flat"}, {"a": {"x": 3}}, {}):
        with pytest.raises(InvalidInput):
            ModzyJobCreate.model_validate(
                {"model": {"identifier": "d", "version": "1"}, "input": {"type": "text", "sources": bad}}
            ).to_request(1)
    with pytest.raises(InvalidInput, match="azureblob"):
        ModzyJobCreate.model_validate(
            {"model": {"identifier": "d", "version": "1"}, "input": {"type": "azureblob", "sources": {}}}
        ).to_request(1)


def test_aws_s3_sources_become_s3_inputs_with_the_request_credentials() -> None:
    body = ModzyJobCreate.model_validate(
        {
            "model": {"identifier": "digits", "version": "1"},
            "input": {
                "type": "aws-s3",
                "accessKeyID": "AKID",
                "secretAccessKey": "hush",
                "region": "eu-west-1",
                "sources": {"a": {"image": {"bucket": "b", "key": "/x/1.png"}}},
            },
        }
    )
    request = body.to_request(pipeline_id=7)
    assert request.inputs == [{"kind": "s3", "data": "s3://b/x/1.png", "name": "a"}]
    credentials = request.s3_credentials
    assert credentials is not None
    assert (credentials.access_key_id, credentials.secret_access_key, credentials.region) == (
        "AKID",
        "hush",
        "eu-west-1",
    )
    assert "hush" not in repr(body) + repr(request) + repr(credentials)


def test_roles_per_project() -> None:
    account_wide = Principal(1, "p", "n", 1, "a", "viewer", None)
    assert account_wide.visible_projects() is None and account_wide.role_in(5) == "viewer"
    assert not account_wide.can_write
    bound = Principal(2, "q", "n", 1, "a", "viewer", 5, {5: "viewer", 6: "member"})
    assert bound.visible_projects() == {5, 6}
    assert (bound.role_in(5), bound.role_in(6), bound.role_in(7)) == ("viewer", "member", None)
    assert bound.can_write
