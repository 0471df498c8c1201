"""Running the app under uvicorn with a shutdown that does not wait on open event streams.

uvicorn's graceful shutdown waits for open responses to finish before it runs the app's lifespan
shutdown, and a Server-Sent-Event stream never finishes by itself. So the signal that starts the
shutdown also closes the event hub at once: every stream sends a ``shutdown`` event and ends, and
the server exits promptly (status 0) instead of waiting out ``timeout_graceful_shutdown``.
"""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn
from fastapi import FastAPI

from conveyor import logs
from conveyor.services.events import EventHub


class ConveyorServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: EventHub) -> None:
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.hub.close_threadsafe()
        super().handle_exit(sig, frame)


def run(app: FastAPI, *, host: str, port: int, log_level: str, timeout_graceful_shutdown: int = 10) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        # JSON logs: uvicorn's own loggers (errors, access lines) go through the root JSON handler.
        log_config=None if logs.log_format() == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    # uvicorn.Config has configured its loggers by now; access lines carry the full path.
    logging.getLogger("uvicorn.access").addFilter(logs.RedactKeysFilter())
    ConveyorServer(config, app.state.events).run()
