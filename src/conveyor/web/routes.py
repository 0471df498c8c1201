"""Dashboard pages. Each page is a shell; its data comes from the JSON API, called by the browser
with the key kept in sessionStorage, so the dashboard has no data path of its own."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from conveyor import __version__

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
static_files = StaticFiles(directory=HERE / "static")
router = APIRouter(include_in_schema=False)

PAGES = {
    "jobs": ("jobs.html", "Jobs"),
    "login": ("login.html", "Sign in"),
    "submit": ("submit.html", "Submit a job"),
    "pipelines": ("pipelines.html", "Pipelines"),
    "keys": ("keys.html", "API keys"),
}


def _page(request: Request, page: str, **context: object) -> HTMLResponse:
    template, title = PAGES.get(page, ("job.html", "Job"))
    return templates.TemplateResponse(
        request, template, {"page": page, "title": title, "version": __version__, **context}
    )


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return _page(request, "jobs")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login")


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request) -> HTMLResponse:
    return _page(request, "submit")


@router.get("/pipelines", response_class=HTMLResponse)
def pipelines_page(request: Request) -> HTMLResponse:
    return _page(request, "pipelines")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int) -> HTMLResponse:
    return _page(request, "job", job_id=job_id)


@router.get("/keys", response_class=HTMLResponse)
def keys_page(request: Request) -> HTMLResponse:
    return _page(request, "keys")
