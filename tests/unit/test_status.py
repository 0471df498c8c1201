"""The transition table and status filters."""

from __future__ import annotations

import pytest

from conveyor.domain.status import (
    ACTIVE,
    TERMINAL,
    JobStatus,
    allowed_sources,
    check_transition,
    resolve_status_filter,
)
from conveyor.errors import IllegalTransition, InvalidInput


def test_terminal_states_only_leave_through_an_explicit_retry() -> None:
    for terminal in TERMINAL:
        reachable = {target for target in JobStatus if terminal in allowed_sources(target)}
        assert reachable == {JobStatus.RETRY}, terminal


def test_nothing_returns_to_created_or_pending_from_later_states() -> None:
    assert allowed_sources(JobStatus.CREATED) == frozenset()
    assert allowed_sources(JobStatus.PENDING) == {JobStatus.CREATED}
    assert allowed_sources(JobStatus.STARTED) == {JobStatus.PENDING}


def test_check_transition_raises_a_conflict_for_illegal_moves() -> None:
    check_transition(JobStatus.STARTED, JobStatus.SUCCESS)
    with pytest.raises(IllegalTransition) as caught:
        check_transition(JobStatus.SUCCESS, JobStatus.STARTED)
    assert caught.value.status_code == 409


def test_status_groups_and_lists() -> None:
    assert resolve_status_filter("pending") == ACTIVE
    assert resolve_status_filter("terminated") == TERMINAL
    assert resolve_status_filter("timedout") == {JobStatus.TIMEDOUT}
    assert resolve_status_filter("all") == frozenset(JobStatus)
    assert resolve_status_filter("success, REVOKED") == {JobStatus.SUCCESS, JobStatus.REVOKED}
    with pytest.raises(InvalidInput):
        resolve_status_filter("finished")
