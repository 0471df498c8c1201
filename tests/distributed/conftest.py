"""A distributed Conveyor per broker: PostgreSQL, `conveyor serve --workers 0`, `conveyor worker`.

Each cluster has its own database and its own queue name, so runs never see each other's
messages; the queue is deleted from the broker afterwards. The pieces are in
``tests.helpers.celery``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.helpers.backends import postgres_database, require_service
from tests.helpers.celery import (
    BROKERS,
    CeleryWorker,
    Cluster,
    delete_queue,
    start_celery_server,
    start_worker,
)


@pytest.fixture(scope="module", params=sorted(BROKERS))
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name, host, port, broker_url = BROKERS[request.param]
    require_service(name, host, port)
    queue = f"conveyor-test-{request.param}-{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path_factory.mktemp(f"celery-{request.param}")
    with postgres_database() as database_url:
        server = start_celery_server(
            data_dir,
            database_url=database_url,
            broker_url=broker_url,
            queue=queue,
            extra_env={"CONVEYOR_CHUNK_SIZE": "5"},
        )
        workers: list[CeleryWorker] = []
        engine = sa.create_engine(database_url)
        try:
            workers.append(start_worker(server.env, queue, data_dir / "worker.log"))
            cluster = Cluster(request.param, database_url, queue, server, workers[0], engine)
            yield cluster
            workers.append(cluster.worker)  # a test may have replaced it
        finally:
            for worker in workers:
                worker.stop()
            server.stop()
            server.kill()
            engine.dispose()
            time.sleep(0.2)  # let the dropped connections close before the database is dropped
            delete_queue(broker_url, queue)
