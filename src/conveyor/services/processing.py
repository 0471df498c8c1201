"""Processing-service use cases: register a remote service by URL, check it, list, remove; and
the pipeline classes its ``remote:<name>/<slug>`` pipelines are submitted with (resolved by
``pipelines.remote.resolve``, the one resolver, which workers use too).

Services belong to an account: every key of the account can see them and run their pipelines;
only an account-wide owner key registers, refreshes or removes one. Registering fetches the
service's ``/info`` (nothing is stored when that fails) and mirrors each of its pipelines into
the pipeline table, so jobs, history and the catalog treat them like installed ones.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import RowMapping

from conveyor.clock import utcnow
from conveyor.domain.access import Principal, require_account_owner
from conveyor.errors import InputUnavailable, InvalidInput
from conveyor.pipelines import remote
from conveyor.settings import Settings
from conveyor.store import Store

MAX_URL_CHARS = 2000


def check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"A processing service's endpoint is an http(s):// URL; {url[:200]!r} is not.")
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"The endpoint URL is longer than {MAX_URL_CHARS} characters.")
    if parts.query or parts.fragment:
        raise InvalidInput("The endpoint URL takes no query or fragment: give the service's base URL.")
    return url.rstrip("/")


class ProcessingServices:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    # ---------------------------------------------------------------- owner actions
    def register(
        self, principal: Principal, endpoint_url: str, name: str | None = None, description: str | None = None
    ) -> int:
        require_account_owner(principal)
        endpoint_url = check_endpoint(endpoint_url)
        if name is not None:
            remote.check_name(name)
        info, health = self._fetch(endpoint_url)
        chosen = name or remote.slugify(info["name"] or urlsplit(endpoint_url).hostname or "service")
        service_id = self.store.processing_services.create(
            principal.account_id,
            chosen,
            endpoint_url,
            description if description is not None else info["description"],
            info=info,
            last_checked_at=utcnow(),
            **health,
        )
        self.store.pipelines.sync(remote.describe_rows(chosen, info))
        self.store.audit.record(principal.account_id, principal.key_prefix, "service.register", chosen)
        return service_id

    def refresh(self, principal: Principal, service_id: int) -> None:
        """Ask the service again for its pipelines and health (a new pipeline version gets a row)."""
        require_account_owner(principal)
        row = self.store.processing_services.get(principal.account_id, service_id)
        client = remote.ServiceClient(row["endpoint_url"], self.settings)
        try:
            health = client.health()
            try:
                info = client.info()
            except remote.ServiceError as exc:
                health.update(ready=False, last_error=str(exc))
                self.store.processing_services.record_check(service_id, last_checked_at=utcnow(), **health)
                return
        finally:
            client.close()
        self.store.processing_services.record_check(service_id, info=info, last_checked_at=utcnow(), **health)
        self.store.pipelines.sync(remote.describe_rows(row["name"], info))

    def remove(self, principal: Principal, service_id: int) -> None:
        """Forget the service. Its pipeline rows stay (past jobs refer to them); new jobs are refused."""
        require_account_owner(principal)
        row = self.store.processing_services.get(principal.account_id, service_id)
        self.store.processing_services.delete(principal.account_id, service_id)
        self.store.audit.record(principal.account_id, principal.key_prefix, "service.remove", row["name"])

    # ---------------------------------------------------------------- reads
    def list(self, principal: Principal) -> list[RowMapping]:
        return self.store.processing_services.list(principal.account_id)

    def get(self, principal: Principal, service_id: int) -> RowMapping:
        return self.store.processing_services.get(principal.account_id, service_id)

    def visible_slugs(self, principal: Principal) -> set[str]:
        """The ``remote:`` slugs this key may run: those of its account's services."""
        return {
            remote.remote_slug(row["name"], p["slug"])
            for row in self.list(principal)
            for p in row["info"]["pipelines"]
        }

    def pipeline_class(self, account_id: int, slug: str) -> type[remote.RemotePipeline]:
        """The class a submission validates with; 400 unknown_pipeline if the account has no such one."""
        cls, _ = remote.resolve(slug, lambda name: self.store.processing_services.by_name(name, account_id))
        return cls

    # ---------------------------------------------------------------- helpers
    def _fetch(self, endpoint_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        client = remote.ServiceClient(endpoint_url, self.settings)
        try:
            try:
                info = client.info()
            except remote.ServiceError as exc:
                raise InputUnavailable(
                    f"Could not register the processing service: {exc}", endpoint_url=endpoint_url
                ) from None
            return info, client.health()
        finally:
            client.close()
