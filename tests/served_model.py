"""``infscale serve`` on the real embedded model in a subprocess, for the slow server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

MODEL = "smollm2-135m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_model(max_tokens: int, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start ``infscale serve --model smollm2-135m`` on a free local port, wait for /health (up
    to 120 s) and yield ``(process, root URL)``; SIGINT (then kill) afterwards. Skips the test
    when the model is not installed."""
    from infscale.models import model_status

    if not any(s["name"] == MODEL and s["installed"] for s in model_status()):
        pytest.skip(f"infscale models install {MODEL}")
    port = free_port()
    cmd = [sys.executable, "-m", "infscale.cli.main", "serve", "--model", MODEL, "--port", str(port),
           "--max-tokens", str(max_tokens), "--shutdown-timeout", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(root + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"infscale serve did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    try:
        yield proc, root
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
