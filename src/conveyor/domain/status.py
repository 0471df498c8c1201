"""Job, item and chunk states and the one table of legal job transitions."""

from __future__ import annotations

from enum import StrEnum

from conveyor.errors import IllegalTransition, InvalidInput


class JobStatus(StrEnum):
    CREATED = "CREATED"
    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    CANCELING = "CANCELING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    TIMEDOUT = "TIMEDOUT"


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.REVOKED, JobStatus.TIMEDOUT}
)
# States in which workers may process items of the job.
RUNNABLE: frozenset[JobStatus] = frozenset({JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY})
# Not yet terminal.
ACTIVE: frozenset[JobStatus] = frozenset(set(JobStatus) - TERMINAL)

# to-state -> the states it may be entered from. Everything else is illegal.
_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.CREATED}),
    JobStatus.STARTED: frozenset({JobStatus.PENDING}),
    JobStatus.RETRY: frozenset({JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.REVOKED, JobStatus.TIMEDOUT}),
    JobStatus.CANCELING: frozenset({JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY}),
    JobStatus.SUCCESS: frozenset({JobStatus.STARTED, JobStatus.RETRY}),
    JobStatus.FAILURE: frozenset({JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY}),
    JobStatus.REVOKED: frozenset({JobStatus.CREATED, JobStatus.CANCELING}),
    JobStatus.TIMEDOUT: frozenset({JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY}),
}


def allowed_sources(target: JobStatus) -> frozenset[JobStatus]:
    """States from which ``target`` may be entered (empty for CREATED: nothing goes back to it)."""
    return _SOURCES.get(target, frozenset())


def check_transition(current: JobStatus, target: JobStatus) -> None:
    if current not in allowed_sources(target):
        raise IllegalTransition(
            f"A job in state {current} cannot move to {target}.", current=str(current), target=str(target)
        )


class ItemStatus(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELED = "CANCELED"


class ChunkStatus(StrEnum):
    BLOCKED = "BLOCKED"  # waits for the job's delay stage
    QUEUED = "QUEUED"
    LEASED = "LEASED"
    DONE = "DONE"
    DROPPED = "DROPPED"  # job canceled, timed out or stopped early


class ChunkKind(StrEnum):
    ITEMS = "items"
    DELAY = "delay"
    COLLECT = "collect"  # lists the job's S3 prefixes and manifests into items (inputs by reference)


# History filter groups (Modzy's names) on top of every canonical state.
STATUS_GROUPS: dict[str, frozenset[JobStatus]] = {
    "all": frozenset(JobStatus),
    "pending": ACTIVE,
    "terminated": TERMINAL,
    "timedout": frozenset({JobStatus.TIMEDOUT}),
}


def resolve_status_filter(value: str) -> frozenset[JobStatus]:
    """``"pending"``, ``"SUCCESS"``, or a comma-separated mix -> a set of canonical states."""
    result: set[JobStatus] = set()
    for raw in value.split(","):
        token = raw.strip()
        if not token:
            continue
        group = STATUS_GROUPS.get(token.lower())
        if group is not None:
            result |= group
            continue
        try:
            result.add(JobStatus(token.upper()))
        except ValueError:
            choices = ", ".join([*STATUS_GROUPS, *JobStatus])
            raise InvalidInput(f"Unknown status filter {token!r}; use one of: {choices}.") from None
    return frozenset(result)
