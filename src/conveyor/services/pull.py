"""Antenna's pull protocol (async_api) use cases: registration, reserving tasks, taking results.

The wire is the ADC worker's, unmodified (README "Antenna pull workers"); the state is item
leases in Conveyor's own store (``store/pull.py``), not NATS. A registered slug resolves in its
project before installed pipelines: ``"pipeline": "<slug>"`` in a project where a pull worker
registered ``<slug>`` is an async_api job of that pull pipeline (``pull:<project>/<slug>``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping

from conveyor import media
from conveyor.domain.access import Principal, require_lease, scope_of
from conveyor.domain.pull import ASYNC_API, PullOutcome, Task, pull_slug, registered_slug, subject_item
from conveyor.errors import InvalidInput, NotFound
from conveyor.pipelines import pull
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.jobs import scope_clauses
from conveyor.store.pull import MAX_BATCH, JobFacts

log = logging.getLogger(__name__)

MAX_RESULTS_PER_POST = 2000
MAX_PIPELINES = 200
#: What of a pull worker's ``client_info`` the worker registry keeps: this many keys, values cut short.
CLIENT_INFO_KEYS = 20
CLIENT_INFO_CHARS = 200
#: Pull workers remembered by key (the hostname their /tasks/ call named), for /result/ calls.
REMEMBERED_WORKERS = 10_000


def client_facts(client_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scalar facts of a worker's ``client_info`` (hostname, software, version, ...), bounded."""
    facts: dict[str, Any] = {}
    for key, value in list((client_info or {}).items())[:CLIENT_INFO_KEYS]:
        if isinstance(value, bool | int | float) or value is None:
            facts[str(key)[:CLIENT_INFO_CHARS]] = value
        elif isinstance(value, str):
            facts[str(key)[:CLIENT_INFO_CHARS]] = value[:CLIENT_INFO_CHARS]
    return facts


class PullService:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        # key id -> the name its pull worker last gave (client_info.hostname; /result/ and the job
        # list name none) and the pipelines it last asked for (only the job list names them).
        self._names: dict[int, str] = {}
        self._pipelines: dict[int, list[str]] = {}

    # ---------------------------------------------------------------- the worker registry
    def seen(
        self,
        principal: Principal,
        client_info: Mapping[str, Any] | None,
        *,
        job_id: int | None = None,
        items_done: int = 0,
        pipelines: Sequence[str] | None = None,
    ) -> None:
        """Record the pull worker behind this call in the worker registry (``GET /api/v2/workers/``):
        named by its ``client_info.hostname`` (remembered per key for the calls that send none),
        else by its key's prefix. The job list (``pipelines``, no job) only notes what the key's
        worker serves: it comes before the first ``/tasks/`` names the worker, and one worker must
        not make two rows. The registry throttles the writes."""
        facts = client_facts(client_info)
        hostname = facts.get("hostname")
        if len(self._names) >= REMEMBERED_WORKERS:
            self._names.clear()
            self._pipelines.clear()
        if isinstance(hostname, str) and hostname:
            self._names[principal.key_id] = hostname
        if pipelines is not None:
            self._pipelines[principal.key_id] = list(pipelines)[:MAX_PIPELINES]
            if job_id is None and not facts:
                return
        name = self._names.get(principal.key_id, principal.key_prefix)
        pipelines = self._pipelines.get(principal.key_id)
        try:
            self.store.workers.seen(
                "pull",
                name,
                host=name if name != principal.key_prefix else "",
                pipelines=pipelines,
                account_id=principal.account_id,
                key_id=principal.key_id,
                info=facts or None,
                job_id=job_id,
                items_done=items_done,
            )
        except Exception:  # the registry is for people looking; the task leases keep work safe
            log.exception("recording pull worker %s in the worker registry failed", name)

    # ---------------------------------------------------------------- registration
    def register(
        self, principal: Principal, project_id: int, service_name: str, pipelines: Sequence[Any]
    ) -> dict[str, Any]:
        """Register (or update) a pull service and its pipelines in a project the key may pull in
        (a worker, member or owner key there)."""
        visible = principal.visible_projects()
        projects = {row["id"] for row in self.store.auth.projects(principal.account_id, None)}
        if project_id not in projects or (visible is not None and project_id not in visible):
            raise NotFound(f"Project {project_id} not found.")
        require_lease(principal, project_id)
        name = service_name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("`processing_service_name` is 1 to 200 characters.")
        if len(pipelines) > MAX_PIPELINES:
            raise InvalidInput(f"A registration lists at most {MAX_PIPELINES} pipelines.")
        try:
            described = [pull.describe(entry) for entry in pipelines]
        except Exception as exc:  # remote.ServiceError: the shape is wrong; say what
            raise InvalidInput(f"Invalid pipeline in the registration: {exc}") from None
        slugs = [d["slug"] for d in described]
        if len(set(slugs)) != len(slugs):
            raise InvalidInput("A registration lists each pipeline slug once.")
        created, updated, service_id = self.store.pull.register(
            principal.account_id, project_id, name, described, principal.key_prefix
        )
        self.store.audit.record(
            principal.account_id, principal.key_prefix, "pull_service.register", name[:100], project_id
        )
        return {
            "pipelines_created": created,
            "pipelines_updated": updated,
            "processing_service_id": service_id,
        }

    def pipeline_class(self, project_id: int, slug: str) -> tuple[RowMapping, type[pull.PullPipeline]] | None:
        """The project's registered pull pipeline ``slug`` (its row and class), or None."""
        found = self.store.pull.pipeline(project_id, slug)
        if found is None:
            return None
        row = self.store.pipelines.by_id(found["pipeline_id"])
        return row, pull.pipeline_class(project_id, dict(found["info"]))

    def visible_slugs(self, principal: Principal) -> set[str]:
        """The ``pull:<project>/<slug>`` pipelines of the projects this key can see (the catalog)."""
        found = self.store.pull.registered(principal.account_id, principal.visible_projects())
        return {pull_slug(project_id, slug) for project_id, slug in found}

    # ---------------------------------------------------------------- tasks and results
    def _pull_job(self, principal: Principal, job_id: int) -> JobFacts:
        """The job, if the key may work on it (404 another account's, 403 read-only) and it is async_api."""
        job = self.store.pull.job_facts(job_id)
        visible = principal.visible_projects()
        if (
            job is None
            or job.account_id != principal.account_id
            or (visible is not None and job.project_id not in visible)
        ):  # the job scope of store/jobs.scope_clauses, on the job's immutable facts
            raise NotFound(f"Job {job_id} not found.", job_id=job_id)
        require_lease(principal, job.project_id)
        if job.dispatch_mode != ASYNC_API:
            raise InvalidInput(
                f"Job {job_id} is not an async_api job (its dispatch_mode is {job.dispatch_mode}); "
                "pull workers serve only jobs of pipelines registered through /projects/{id}/pipelines/.",
                job_id=job_id,
            )
        return job

    def reserve(
        self, principal: Principal, job_id: int, batch_size: int, base_url: str
    ) -> list[dict[str, str]]:
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidInput(f"`batch_size` is 1 to {MAX_BATCH}.")
        for _ in range(2):
            facts = self._pull_job(principal, job_id)
            tasks = self.store.pull.reserve(
                facts,
                job_id,
                batch_size,
                lease_seconds=self.settings.pull_lease_seconds,
                max_deliveries=self.settings.pull_max_deliveries,
            )
            if tasks is not None:
                return self.present_tasks(tasks, base_url)
            self.store.pull.forget(job_id)  # deleted (its id maybe reused): check from the row again
        raise NotFound(f"Job {job_id} not found.", job_id=job_id)

    def present_tasks(self, tasks: Sequence[Task], base_url: str) -> list[dict[str, str]]:
        """``{"id", "image_id", "image_url", "reply_subject"}``: the item's own public URL, else a
        signed, expiring media URL (fetched without a key)."""
        if not tasks:
            return []
        base = self.settings.media_base_url or self.settings.public_url or base_url
        secret = self.store.processing_services.secret(media.SECRET_NAME)
        ttl = max(self.settings.media_url_seconds, self.settings.pull_lease_seconds)
        shown = []
        for task in tasks:
            public = task.ref is not None and task.ref.startswith(("http://", "https://"))
            url = task.ref if public and task.ref else media.signed_url(base, secret, task.item_id, ttl)
            shown.append(
                {
                    "id": str(task.item_id),
                    "image_id": str(task.item_id),
                    "image_url": url,
                    "reply_subject": task.reply_subject,
                }
            )
        return shown

    def post_results(self, principal: Principal, job_id: int, results: Sequence[Any]) -> dict[str, Any]:
        """Apply the answers (once per task, in one transaction with the counters) and acknowledge
        every one: repeated, late, forged or post-cancel answers are acknowledged and change nothing."""
        if len(results) > MAX_RESULTS_PER_POST:
            raise InvalidInput(f"Post at most {MAX_RESULTS_PER_POST} results at once.")
        facts = self._pull_job(principal, job_id)
        outcomes: list[PullOutcome] = []
        subjects: list[str] = []
        for entry in results:
            if not isinstance(entry, dict) or not isinstance(entry.get("reply_subject"), str):
                raise InvalidInput('Each result is {"reply_subject": "…", "result": {…}}.')
            subject = entry["reply_subject"]
            subjects.append(subject)
            item_id = subject_item(subject)
            if item_id is not None:
                outcomes.append(pull.outcome(item_id, subject, entry.get("result")))
        applied = self.store.pull.apply_results(facts, job_id, outcomes)
        if applied is None:  # deleted (its id maybe reused): check from the row again
            self.store.pull.forget(job_id)
            applied = self.store.pull.apply_results(self._pull_job(principal, job_id), job_id, outcomes)
        if applied is None:
            raise NotFound(f"Job {job_id} not found.", job_id=job_id)
        by_subject = {o.reply_subject: o.item_id for o in outcomes}
        return {
            "status": "accepted",
            "job_id": job_id,
            "results_queued": len(results),
            "results_applied": len(applied.item_ids),
            "tasks": [
                {
                    "reply_subject": subject,
                    "status": "queued",
                    "task_id": str(by_subject[subject]) if subject in by_subject else None,
                    "applied": by_subject.get(subject) in applied.item_ids,
                }
                for subject in subjects
            ],
        }

    def next_job(
        self, principal: Principal, slugs: Sequence[str], batch_size: int, base_url: str
    ) -> dict[str, Any]:
        """Antenna #1265's ``/jobs/next``: the oldest async_api job of ``slugs`` with work left,
        and (``batch_size`` > 0) its first tasks reserved in the same call."""
        if not slugs:
            raise InvalidInput("Give the pipeline slugs this worker serves, as `pipeline_slugs`.")
        if not 0 <= batch_size <= MAX_BATCH:
            raise InvalidInput(f"`batch_size` is 0 to {MAX_BATCH}.")
        found = self.store.pull.next_job(scope_clauses(scope_of(principal)), slugs)
        if found is None:
            return {"job": None, "tasks": []}
        job = {"id": found["id"], "pipeline_slug": registered_slug(found["pipeline_slug"])}
        tasks = self.reserve(principal, found["id"], batch_size, base_url) if batch_size else []
        return {"job": job, "tasks": tasks}
