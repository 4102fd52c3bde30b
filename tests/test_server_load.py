"""Load: 64 concurrent clients against a fake backend — no errors, bounded memory, no leaks.

The fake generator takes a few milliseconds per sample, so the server's own work (HTTP,
validation, admission, the runner, JSON) dominates, and any per-request leak shows up as
resident-memory growth over the rounds.
"""

from __future__ import annotations

import asyncio
import gc
import time

import httpx
import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")

from infscale.server import ServerThread, create_app  # noqa: E402
from infscale.testing import FakeGenerator, answer_model  # noqa: E402

CLIENTS = 64
REQUESTS_PER_CLIENT = 4
USER = [{"role": "user", "content": "What is 6 * 7?"}]


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def clients(base_url: str, rounds: int) -> list[int]:
    # Idle connections expire on the client first: httpx and uvicorn both default to 5 s of
    # keep-alive, and a run that takes about that long otherwise reuses a connection the server
    # is closing at that moment (httpx.ReadError; seen under load, 2 runs in about 12).
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS, keepalive_expiry=1.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as c:

        async def one_client(k: int) -> list[int]:
            codes = []
            for i in range(rounds):
                if i % 4 == 3:  # a streamed request now and then
                    body = {"model": "majority-4:fake", "messages": USER, "stream": True, "seed": k * 100 + i}
                    async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                        text = "".join([part async for part in r.aiter_text()])
                        ok = r.status_code == 200 and text.rstrip().endswith("data: [DONE]") and '"error"' not in text
                        codes.append(r.status_code if ok else 599)
                else:
                    model = "majority-4:fake" if i % 2 else "fake"
                    r = await c.post("/v1/chat/completions", json={"model": model, "messages": USER, "seed": k * 100 + i})
                    codes.append(r.status_code if r.status_code != 200 or r.json()["choices"] else 598)
            return codes

        results = await asyncio.gather(*[one_client(k) for k in range(CLIENTS)])
    return [code for codes in results for code in codes]


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs /proc for RSS")
def test_64_concurrent_clients_no_errors_bounded_memory():
    gen = FakeGenerator(answer_model(0.6), delay=0.002)
    gen.model_name = "fake"
    app = create_app(gen, max_concurrency=16, max_queue=CLIENTS)  # every client fits: 16 running + 48 queued
    with ServerThread(app) as srv:
        warm = asyncio.run(clients(srv.root_url, 1))  # warm-up: imports, caches, connection pools
        assert set(warm) == {200}
        gc.collect()
        before = rss_mb()
        t0 = time.monotonic()
        codes = asyncio.run(clients(srv.root_url, REQUESTS_PER_CLIENT))
        elapsed = time.monotonic() - t0
        gc.collect()
        grown = rss_mb() - before
        errors = [c for c in codes if c != 200]
        assert len(codes) == CLIENTS * REQUESTS_PER_CLIENT
        assert not errors, f"{len(errors)} errors: {sorted(set(errors))}"
        assert grown < 64, f"resident memory grew {grown:.1f} MB over {len(codes)} requests"
        health = httpx.get(srv.root_url + "/health").json()
        assert health["in_flight"] == 0 and health["queued"] == 0
        assert not app.state.service.tasks  # no request left running
        print(f"\n{len(codes)} requests from {CLIENTS} clients in {elapsed:.1f}s "
              f"({len(codes) / elapsed:.0f} req/s), RSS {before:.0f} MB -> +{grown:.1f} MB")
