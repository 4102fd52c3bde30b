"""Serve an app with uvicorn on 127.0.0.1 in a background thread (tests, benchmarks, notebooks).

::

    with ServerThread(create_app(generator)) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="-")
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

__all__ = ["ServerThread", "DrainingServer", "DRAIN_MARGIN_SECONDS"]

#: uvicorn's own graceful-shutdown timeout is the app's drain plus this margin, so that uvicorn
#: never cuts a request the app is still draining (it would answer a plain-text 500).
DRAIN_MARGIN_SECONDS = 10.0


def _draining_server_class():
    import uvicorn  # noqa: PLC0415

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, with the app's drain first when it is told to stop: new requests
        get 503 ``shutting_down`` while running ones finish for the app's ``shutdown_timeout``;
        the rest are cancelled and answer 503 ``shutting_down``; then uvicorn closes."""

        async def shutdown(self, sockets=None) -> None:
            state = getattr(self.config.app, "state", None)
            service = getattr(state, "service", None)
            if service is not None and not service.draining:
                cancelled = await service.drain(service.config.shutdown_timeout)
                if cancelled:
                    import logging  # noqa: PLC0415

                    logging.getLogger("infscale.server").warning(
                        "shutdown: cancelled %d request(s) still running", cancelled)
                await asyncio.sleep(0.2)  # let the cancelled requests send their 503s
            await super().shutdown(sockets)

    return DrainingServer


def DrainingServer(config):  # noqa: N802 - a class made lazily (uvicorn is an optional extra)
    """A :class:`uvicorn.Server` whose shutdown drains the infscale app first."""
    return _draining_server_class()(config)


class ServerThread:
    """uvicorn in a thread on an ephemeral port of ``host``; ``stop()`` shuts it down
    gracefully: the app drains first (:class:`DrainingServer`: in-flight requests finish within
    its ``shutdown_timeout`` or answer 503 ``shutting_down``), then uvicorn waits at most
    ``timeout_graceful_shutdown`` more for connections to close."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout_graceful_shutdown: float = 5.0,
                 log_level: str = "warning"):
        import uvicorn  # noqa: PLC0415

        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and
        # without it a response written in two parts waits for the client's delayed ACK (40 ms)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=timeout_graceful_shutdown,
                                access_log=False)
        self.server = DrainingServer(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def start(self, timeout: float = 60.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread exited during startup (see the log)")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
