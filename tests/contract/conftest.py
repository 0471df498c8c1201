"""One Conveyor deployment per backend combination, shared by every contract test of a module.

The ``deployment`` fixture is module-scoped and parametrized over the four combinations the
product supports; the contract tests only talk to a :class:`Deployment`, so the very same test
functions run against each of them:

- ``sqlite-local``: embedded mode, SQLite + ``conveyor serve --workers 2``;
- ``postgres-local``: a fresh PostgreSQL database + ``conveyor serve --workers 2``;
- ``postgres-celery-redis`` / ``postgres-celery-rabbitmq``: a fresh PostgreSQL database,
  ``conveyor serve --workers 0`` and one ``conveyor worker --concurrency 2`` on a unique queue.

A missing service skips locally and fails under ``CI=true`` (``require_service``). Everything a
deployment starts is cleaned up: process groups, the database, the broker queue. The
``Deployment`` the tests talk to is in ``tests.helpers.deployments``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa

from tests.helpers import TEST_ENV, Server, start_server
from tests.helpers.backends import postgres_database, require_service
from tests.helpers.celery import BROKERS, CeleryWorker, delete_queue, start_celery_server, start_worker
from tests.helpers.deployments import Deployment
from tests.helpers.inputs import FileServer, serve_files
from tests.moto_s3 import CREDENTIALS, moto_s3_server

# Inputs by reference: the contract's file server is on 127.0.0.1, and request bytes over 64
# bytes go to the blob store (an S3 bucket on moto in the Celery deployments).
CONTRACT_ENV = {
    **TEST_ENV,
    "CONVEYOR_CHUNK_SIZE": "5",
    "CONVEYOR_ALLOW_PRIVATE_URLS": "true",
    "CONVEYOR_BLOB_INLINE_BYTES": "64",
}
COMBINATIONS = ("sqlite-local", "postgres-local", "postgres-celery-redis", "postgres-celery-rabbitmq")
LOCAL_WORKERS = 2
STOP_SECONDS = 10


@contextlib.contextmanager
def _local(data_dir: Path, database_url: str | None, name: str) -> Iterator[Deployment]:
    extra = dict(CONTRACT_ENV)
    if database_url:
        extra["CONVEYOR_DATABASE_URL"] = database_url
    server = start_server(data_dir, workers=LOCAL_WORKERS, extra_env=extra)
    engine = sa.create_engine(database_url or f"sqlite:///{data_dir / 'conveyor.db'}")
    try:
        yield Deployment(name, server, engine, f"ct-{name}-{uuid.uuid4().hex[:8]}")
    finally:
        server.stop(timeout=STOP_SECONDS)
        server.kill()
        engine.dispose()


@pytest.fixture(scope="session")
def contract_s3() -> Iterator[str]:
    """moto's S3 server: the blob store of the Celery deployments (workers read blobs from S3)."""
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def contract_files() -> Iterator[FileServer]:
    """A local HTTP server for the inputs given by reference."""
    yield from serve_files()


def s3_blob_env(endpoint: str, name: str) -> dict[str, str]:
    bucket = "contract-blobs"
    client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    return {
        "CONVEYOR_BLOB_URL": f"s3://{bucket}/{name}",
        "CONVEYOR_S3_ENDPOINT_URL": endpoint,
        "CONVEYOR_S3_REGION": "us-east-1",
        "CONVEYOR_S3_ACCESS_KEY_ID": "testing",
        "CONVEYOR_S3_SECRET_ACCESS_KEY": "testing",
    }


@contextlib.contextmanager
def _celery(
    data_dir: Path, database_url: str, broker: str, name: str, s3_endpoint: str
) -> Iterator[Deployment]:
    _, _, _, broker_url = BROKERS[broker]
    queue = f"conveyor-contract-{broker}-{uuid.uuid4().hex[:10]}"
    server: Server | None = None
    worker: CeleryWorker | None = None
    engine = sa.create_engine(database_url)
    try:
        server = start_celery_server(
            data_dir,
            database_url=database_url,
            broker_url=broker_url,
            queue=queue,
            extra_env={**CONTRACT_ENV, **s3_blob_env(s3_endpoint, name)},
        )
        worker = start_worker(server.env, queue, data_dir / "worker.log")
        yield Deployment(name, server, engine, f"ct-{name}-{uuid.uuid4().hex[:8]}", worker=worker)
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            server.stop(timeout=STOP_SECONDS)
            server.kill()
        engine.dispose()
        time.sleep(0.2)  # let the dropped connections close before the database is dropped
        delete_queue(broker_url, queue)


@pytest.fixture(scope="module", params=COMBINATIONS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, contract_s3: str
) -> Iterator[Deployment]:
    name: str = request.param
    data_dir = tmp_path_factory.mktemp(name)
    if name == "sqlite-local":
        with _local(data_dir, None, name) as deployed:
            yield deployed
        return
    if name.startswith("postgres-celery-"):
        broker = name.removeprefix("postgres-celery-")
        service, host, port, _ = BROKERS[broker]
        require_service(service, host, port)
        with (
            postgres_database() as database_url,
            _celery(data_dir, database_url, broker, name, contract_s3) as deployed,
        ):
            yield deployed
        return
    with postgres_database() as database_url, _local(data_dir, database_url, name) as deployed:
        yield deployed
