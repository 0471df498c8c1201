"""The baseline of ``celery_throughput.py``: plain Celery, one task per item, nothing else.

Each ``noop`` task does the least a real task does to be counted: it records its completion
(``INCR`` of a Redis counter), so the benchmark knows when all N are done without a result
backend. Started as ``celery -A plain_celery_app worker`` with ``PLAIN_CELERY_BROKER`` and
``PLAIN_CELERY_COUNTER_URL`` in the environment.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

app = Celery("plain", broker=os.environ.get("PLAIN_CELERY_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=4, task_acks_late=True)
_counter = redis.Redis.from_url(os.environ.get("PLAIN_CELERY_COUNTER_URL", "redis://127.0.0.1:6379/0"))


@app.task(name="plain.noop")
def noop(counter_key: str, payload: str) -> None:
    _counter.incr(counter_key)
