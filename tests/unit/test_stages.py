"""Stage progress is derived from counters and state."""

from __future__ import annotations

from conveyor.domain.stages import StageDef, derive_stages, overall_progress
from conveyor.domain.status import JobStatus

PIPELINE = [StageDef("process", "Process")]


def test_stages_of_a_running_job_with_delay() -> None:
    stages = derive_stages(
        status=JobStatus.STARTED,
        pipeline_stages=PIPELINE,
        delay=2,
        delay_progress=0.5,
        total=10,
        done=0,
        params={},
    )
    assert [s.key for s in stages] == ["delay", "process", "results"]
    assert [s.status for s in stages] == ["STARTED", "CREATED", "CREATED"]
    assert stages[0].progress == 0.5


def test_stages_follow_items_and_finish_with_the_job() -> None:
    running = derive_stages(
        status=JobStatus.STARTED,
        pipeline_stages=PIPELINE,
        delay=0,
        delay_progress=0,
        total=4,
        done=1,
        params={"process": [{"name": "model_load_ms", "value": 3}]},
    )
    assert [s.key for s in running] == ["process", "results"]
    assert running[0].status == "STARTED" and running[0].progress == 0.25
    assert running[0].params == [{"name": "model_load_ms", "value": 3}]
    done = derive_stages(
        status=JobStatus.SUCCESS,
        pipeline_stages=PIPELINE,
        delay=0,
        delay_progress=0,
        total=4,
        done=4,
        params={},
    )
    assert all(s.status == "SUCCESS" for s in done)
    assert overall_progress(done) == 1.0
    revoked = derive_stages(
        status=JobStatus.REVOKED,
        pipeline_stages=PIPELINE,
        delay=0,
        delay_progress=0,
        total=4,
        done=2,
        params={},
    )
    assert revoked[0].status == "REVOKED" and revoked[0].progress == 0.5
