"""Figure 5: oversized requests. N requests, 4 at a time, each streaming far more than its route
takes: half are 250 MB webhook deliveries with a wrong signature (the farm reads up to the 5 MB
webhook limit, then answers 413), half are 100 MB build specs without a token (401 before the body
is read). The client streams each body in 1 MB chunks (chunked encoding, no Content-Length, so the
farm must count) and never holds it. The figure is the farm process's peak RSS over its RSS before
the requests, measured in the same run."""

from __future__ import annotations

import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from .common import Api, Figure, RssSampler, say

MB = 1024 * 1024
CHUNK = b"x" * MB


def stream(port: int, path: str, headers: dict[str, str], size: int) -> tuple[int | None, int]:
    """POST `size` bytes to `path` in chunks until the farm answers; (its status, bytes sent)."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head.encode())
        frame = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
        while True:
            readable, writable, _ = select.select([s], [s] if sent < size else [], [], 60)
            if readable:
                break
            if not writable:
                if sent >= size:  # all sent: end the body and wait for the answer
                    s.sendall(b"0\r\n\r\n")
                    break
                raise TimeoutError(f"{path}: the farm neither read nor answered for 60 s")
            try:
                s.sendall(frame)
            except OSError:  # it answered and closed
                break
            sent += len(CHUNK)
        try:
            while b"\r\n" not in answer and (got := s.recv(4096)):
                answer += got
        except OSError:
            pass
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else None
    return status, sent


def bench_oversized(api: Api, n: int) -> Figure:
    farm = api.farm
    pid = farm.proc.pid
    say(f"oversized: {n} requests, 4 at a time, streamed in 1 MB chunks: {n // 2} webhook deliveries of "
        f"250 MB with a wrong signature, {n - n // 2} build specs of 100 MB without a token; the farm's "
        f"VmRSS (pid {pid}) every 100 ms")
    requests = [("/hooks/github", {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}, 250 * MB),
                ("/api/v1/builds", {"Content-Type": "application/json"}, 100 * MB)]
    jobs = [requests[i % 2] for i in range(n)]
    sampler = RssSampler(pid).start()
    try:
        time.sleep(1.0)
        before = sampler.samples[-1][2]
        sampler.mark("requests")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda job: stream(farm.port, *job), jobs))
        elapsed = time.perf_counter() - t0
        sampler.mark("after")
        time.sleep(1.0)
        after = sampler.samples[-1][2]
        peak = sampler.peak("requests")
    finally:
        sampler.stop()
    statuses = {path: sorted({st for (p, _, _), (st, _) in zip(jobs, results) if p == path}, key=str)
                for path, _, _ in requests}
    sent = sum(s for _, s in results)
    healthy = api.http.get("/healthz").status_code == 200
    say(f"  answers: webhooks {statuses['/hooks/github']}, specs {statuses['/api/v1/builds']}; the client sent "
        f"{sent / MB:,.0f} MB of the {sum(size for _, _, size in jobs) / MB:,.0f} MB offered in {elapsed:.1f} s")
    say(f"  farm RSS: {before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB during, {after / 1024:.0f} MB after; "
        f"the farm {'still answers' if healthy else 'DOES NOT ANSWER'} /healthz")
    ok = (healthy and statuses["/hooks/github"] == [413] and statuses["/api/v1/builds"] == [401]
          and peak - before < 64 * 1024)
    return Figure(
        key="oversized", name=f"{n} oversized requests (250 MB webhooks, 100 MB specs without a token)",
        value=peak / 1024, unit="MB peak RSS", baseline=before / 1024, baseline_what="the farm's RSS before them",
        ratio=peak / before, target="413 / 401 for each; peak RSS < before + 64 MB", ok=ok,
        shown=f"farm RSS peak {peak / 1024:.0f} MB, {after / 1024:.0f} MB after; answers 413 (webhooks), 401 (specs)",
        baseline_shown=f"the farm's RSS before them: {before / 1024:.0f} MB",
        details={"n": n, "elapsed_s": elapsed, "rss_before_kb": before, "rss_peak_kb": peak, "rss_after_kb": after,
                 "client_sent_bytes": sent, "statuses": statuses, "healthy": healthy})
