"""Antenna's pull protocol (``async_api``): the names shared by the store, services and API.

A pull processing service (Antenna's ADC worker) registers its pipelines in a project; each is
mirrored into the pipeline table as ``pull:<project_id>/<slug>`` (so two projects, or an
installed pipeline, may use the same slug without sharing a row), while the worker keeps
seeing and sending its own ``<slug>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: ``jobs.dispatch_mode`` of a job served only to pull workers (Antenna's value).
ASYNC_API = "async_api"
PREFIX = "pull:"


def pull_slug(project_id: int, slug: str) -> str:
    return f"{PREFIX}{project_id}/{slug}"


def registered_slug(pipeline_slug: str | None) -> str | None:
    """The slug a pull worker registered (``pull:3/moths`` -> ``moths``); other slugs unchanged."""
    if pipeline_slug is None or not pipeline_slug.startswith(PREFIX):
        return pipeline_slug
    return pipeline_slug.partition("/")[2] or pipeline_slug


def subject_item(reply_subject: str) -> int | None:
    """The item id a reply subject was made for (``<item id>.<random>``); None if it is not one."""
    head, sep, tail = reply_subject.partition(".")
    if not sep or not tail or not head.isdigit() or len(head) > 18:
        return None
    return int(head)


@dataclass(frozen=True)
class Task:
    """One delivery of an item to a pull worker."""

    item_id: int
    ref: str | None
    reply_subject: str


@dataclass(frozen=True)
class PullOutcome:
    """A worker's answer for one task, parsed: applied only while ``reply_subject`` is current."""

    item_id: int
    reply_subject: str
    ok: bool
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Applied:
    """What one result post changed: the item ids written (the rest changed nothing)."""

    item_ids: frozenset[int]
    job_status: str | None
