"""Gateway select: main-thread CPU per 20-video row, in one process, no HTTP.

Run: ``python -m bench.bench_gateway_cpu [--rows 2000] [--profile]``.

The HTTP benchmark (:mod:`bench.bench_gateway`) is sensitive to whatever else
the machine runs; CPU time spent by the thread that serves requests is much
less so. Steps:

1. start a private broker and redis-server and seed the catalog of
   :mod:`bench.bench_gateway` (2,000 videos of 5 posters, full rule set);
2. build a :class:`gateway.service.Gateway` in this process, on uvloop and
   with one BLAS thread as ``keyart gateway`` runs, and warm its caches with
   300 rows;
3. answer ``--rows`` rows with ``Gateway.select`` one after the other (each
   with a real Redis read and its decisions produced to the broker) and print
   the main thread's CPU time per row, the process's (which adds librdkafka's
   threads), its Python children's (the decision log's producer and the
   retirement rule, :mod:`gateway.decision_log`, :mod:`gateway.retirement`)
   and wall time;
4. beside it, two floors measured in the same run on the same connections:
   one Redis ``PING`` round trip, and the row's unavoidable work without any
   decision: the same row script call and its reply, the row's twenty
   decisions (taken from real selects) handed to the decision log, twenty
   tokens signed and the answer serialised. No implementation of the select
   contract costs less than that floor in this process; ``--profile`` adds
   the 30 functions with the most own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time

import numpy as np
import orjson
import uvloop

from bench._common import private_stack
from bench.bench_gateway import SECRET, bodies, seed


async def _run(settings, rows: int, profile: bool) -> None:
    from gateway.models import SelectRequest
    from gateway.service import Gateway

    gateway = Gateway(settings)
    await gateway.start()
    requests = [
        SelectRequest(**orjson.loads(b)) for b in bodies(np.random.default_rng(1), 500)
    ]
    try:
        for request in requests[:300]:  # Step 2
            await gateway.select(request)
        await asyncio.sleep(0.2)

        started = time.thread_time()
        for _ in range(rows):
            await gateway.redis.ping()
        ping_ms = (time.thread_time() - started) / rows * 1000
        floor_ms = await _floor(gateway, requests, rows)  # Step 4

        profiler = cProfile.Profile() if profile else None
        children = _children_cpu()
        cpu, wall, thread = time.process_time(), time.perf_counter(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        for i in range(rows):  # Step 3
            await gateway.select(requests[i % len(requests)])
        if profiler is not None:
            profiler.disable()
        thread = (time.thread_time() - thread) / rows * 1000
        cpu = (time.process_time() - cpu) / rows * 1000
        wall = (time.perf_counter() - wall) / rows * 1000
        children = (_children_cpu() - children) / rows * 1000
    finally:
        await gateway.stop()
    print(f"rows {rows}, 20 videos x 5 posters, full rule set, default variants")
    print(
        f"{'':28}{'main thread':>12}{'process':>10}{'children':>10}{'wall':>10}"
        "  (ms per row)"
    )
    print(f"{'Gateway.select':28}{thread:12.3f}{cpu:10.3f}{children:10.3f}{wall:10.3f}")
    print(f"{'floor: read, log, tokens':28}{floor_ms:12.3f}")
    print(f"{'floor: redis PING':28}{ping_ms:12.3f}")
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def _children_cpu() -> float:
    """CPU seconds of this process's Python children (not the servers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().split(b"\0")[0].decode()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and command == sys.executable:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _floor(gateway, requests, rows: int) -> float:
    """Main-thread ms per row of the work every select must do (step 4)."""
    from gateway.rules import cue_text

    assert gateway.reader is not None and gateway.decision_log is not None
    samples = []  # real decision rows, one per request
    for request in requests[:50]:
        await gateway.select(request)
        samples.append(gateway.decision_log.pending[-1])
        gateway.decision_log.flush()
    reader, signer, log = gateway.reader, gateway.signer, gateway.decision_log
    rules = gateway.rules_for(requests[0].placement)
    started = time.thread_time()
    for i in range(rows):
        request = requests[i % len(requests)]
        # The row script and its reply, without turning it into states.
        await reader.raw(
            request.user_id,
            request.video_ids,
            rules.exposure_window_s,
            rules.deweight_recency_s,
        )
        cue_text(request.cues)
        row = samples[i % len(samples)]
        log.log(row)
        when, _, user, placement, variant, version, _, decisions = row
        slots = [
            {
                "video_id": video,
                "poster_id": poster,
                "token": signer.sign_fields(
                    event_id, user, video, poster, placement, policy, variant,
                    model, p, when, version, "",
                ),
                "propensity": p,
            }
            for event_id, video, poster, policy, p, model, *_ in decisions
        ]  # fmt: skip
        orjson.dumps({"request_id": "r", "variant": "v", "slots": slots})
    return (time.thread_time() - started) / rows * 1000


def main() -> None:
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    # One BLAS thread, as `keyart gateway` runs: with two, a row's small
    # products (the MMR embedding Gram matrix, LinUCB's scores) cost the main
    # thread more and a second thread as much again.
    threadpool_limits(1)
    with private_stack(token_secret=SECRET, redis_budget_ms=1000.0) as settings:
        seed(settings, np.random.default_rng(0))  # Step 1
        uvloop.run(_run(settings, args.rows, args.profile))


if __name__ == "__main__":
    main()
