"""Modzy dialect: ``/api/models`` backed by the installed pipelines (identifier = slug,
version = pipeline version)."""

from __future__ import annotations

from itertools import groupby
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import RowMapping

from conveyor.api.deps import PrincipalDep, SettingsDep, StoreDep
from conveyor.api.schemas.common import DB_INT_MAX
from conveyor.api.schemas.modzy import present_model, present_version
from conveyor.errors import InvalidInput, NotFound
from conveyor.pipelines import registry
from conveyor.store import Store

router = APIRouter(prefix="/api/models", tags=["modzy"])


def installed_models(store: Store) -> dict[str, list[RowMapping]]:
    """slug -> its versions (oldest first), for pipelines installed on this server."""
    installed = registry.available()
    rows = [r for r in store.pipelines.all() if r["slug"] in installed]
    return {slug: list(group) for slug, group in groupby(rows, key=lambda r: r["slug"])}


def find_version(store: Store, identifier: str, version: str) -> RowMapping:
    versions = installed_models(store).get(identifier)
    if versions is None:
        raise NotFound(f"Model {identifier!r} not found.", model=identifier)
    for row in versions:
        if version in (str(row["version"]), row["version_name"]):
            return row
    known = ", ".join(str(r["version"]) for r in versions)
    raise NotFound(f"Model {identifier!r} has no version {version!r} (known: {known}).", model=identifier)


@router.get(
    "/requirements/account",
    summary="Hardware requirements (none: pipelines run on Conveyor's workers)",
    description="Read by modzy-sdk when it starts; always an empty list here.",
)
def requirements(_: PrincipalDep) -> JSONResponse:
    return JSONResponse([])


@router.get("", summary="Models (pipelines), filtered and paged the Modzy way")
def list_models(
    store: StoreDep,
    _: PrincipalDep,
    model_id: Annotated[str | None, Query(alias="modelId", description="Exact identifier.")] = None,
    name: Annotated[
        str | None, Query(description="Case-insensitive substring of the name or identifier.")
    ] = None,
    description: Annotated[str | None, Query(description="Substring of the description.")] = None,
    sort_by: Annotated[str | None, Query(alias="sort-by", description="identifier or name.")] = None,
    direction: Annotated[str | None, Query(description="asc or desc.")] = None,
    page: Annotated[int, Query(ge=1, le=DB_INT_MAX)] = 1,
    per_page: Annotated[int, Query(alias="per-page", ge=1, le=1000)] = 1000,
) -> JSONResponse:
    models = [present_model(v) for v in installed_models(store).values()]
    if model_id:
        models = [m for m in models if m["identifier"] == model_id]
    if name:
        needle = name.lower()
        models = [m for m in models if needle in m["name"].lower() or needle in m["identifier"].lower()]
        # An exact name first: modzy-sdk's get_by_name takes the first match.
        models.sort(key=lambda m: m["name"].lower() != needle and m["identifier"] != name)
    if description:
        models = [m for m in models if description.lower() in m["description"].lower()]
    if sort_by is not None or direction is not None:
        key = {"identifier": "identifier", "modelId": "identifier", "name": "name"}.get(
            sort_by or "identifier"
        )
        if key is None:
            raise InvalidInput(f"Cannot sort models by {sort_by!r}; use identifier or name.")
        models.sort(key=lambda m: str(m[key]).lower(), reverse=(direction or "asc").lower() == "desc")
    start = (page - 1) * per_page
    return JSONResponse(models[start : start + per_page])


@router.get("/{identifier}", summary="One model with its versions")
def get_model(identifier: str, store: StoreDep, _: PrincipalDep) -> JSONResponse:
    versions = installed_models(store).get(identifier)
    if versions is None:
        raise NotFound(f"Model {identifier!r} not found.", model=identifier)
    return JSONResponse(present_model(versions))


@router.get("/{identifier}/versions", summary="Every version of a model")
def list_versions(identifier: str, store: StoreDep, settings: SettingsDep, _: PrincipalDep) -> JSONResponse:
    versions = installed_models(store).get(identifier)
    if versions is None:
        raise NotFound(f"Model {identifier!r} not found.", model=identifier)
    return JSONResponse([present_version(v, settings.max_input_bytes) for v in versions])


@router.get("/{identifier}/versions/{version}", summary="One model version: inputs, outputs, stages")
def get_version(
    identifier: str, version: str, store: StoreDep, settings: SettingsDep, _: PrincipalDep
) -> JSONResponse:
    return JSONResponse(present_version(find_version(store, identifier, version), settings.max_input_bytes))


@router.get("/{identifier}/versions/{version}/sample-input", summary="A job body that this version accepts")
def sample_input(identifier: str, version: str, store: StoreDep, _: PrincipalDep) -> JSONResponse:
    row = find_version(store, identifier, version)
    kind = "text" if "text" in row["input_kinds"] else "embedded"
    value = "some text" if kind == "text" else "data:application/octet-stream;base64,AAAA"
    body: dict[str, Any] = {
        "model": {"identifier": identifier, "version": str(row["version"])},
        "input": {"type": kind, "sources": {"0001": {"input": value}}},
    }
    return JSONResponse(body)


@router.get("/{identifier}/versions/{version}/sample-output", summary="The shape of one source's results")
def sample_output(identifier: str, version: str, store: StoreDep, _: PrincipalDep) -> JSONResponse:
    find_version(store, identifier, version)
    return JSONResponse({"results": {"0001": {"status": "SUCCESSFUL", "results.json": {}}}, "failures": {}})
