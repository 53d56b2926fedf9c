"""Serving throughput: N concurrent clients on loopback against `lumina-mgpt serve`, batched vs one at a time.

    python bench/serve.py [--model FOLDER] [--clients 32] [--size 128x128] [--n 1] [--device cuda]

Starts the server (API only) on a free loopback port and sends one text-to-image request per client, all at
once, timing each; then sends the very same requests one after another, which is what a server without
batching does. Prints errors, throughput, p50/p95 latency and decode calls of both runs, and the batching gain
(one-at-a-time wall time / concurrent wall time). The model defaults to the shipped one when it is installed.
"""

import argparse
import asyncio
import time

import httpx
import numpy as np

from lumina_mgpt.hub import DEFAULT_MODEL
from lumina_mgpt.serve.launch import server_process


async def run(url: str, bodies: list[dict], concurrent: bool) -> dict:
    """Send `bodies` all at once (or one by one); latencies, errors, wall time and decode calls."""
    limits = httpx.Limits(max_connections=len(bodies) if concurrent else 1)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        before = (await client.get("/health")).json()

        async def one(body: dict) -> tuple[float, bool]:
            began = time.perf_counter()
            reply = await client.post("/v1/images/generations", json=body)
            ok = reply.status_code == 200 and len(reply.json()["data"]) == body["n"]
            return time.perf_counter() - began, ok

        began = time.perf_counter()
        if concurrent:
            results = await asyncio.gather(*(one(body) for body in bodies))
        else:
            results = [await one(body) for body in bodies]
        wall = time.perf_counter() - began
        after = (await client.get("/health")).json()
    latencies = np.array([seconds for seconds, _ in results])
    return {
        "wall": wall,
        "errors": sum(not ok for _, ok in results),
        "p50": np.percentile(latencies, 50),
        "p95": np.percentile(latencies, 95),
        "decodes": after["decodes"] - before["decodes"],
    }


def report(name: str, result: dict, requests: int, images: int) -> None:
    print(
        f"{name:>12}: {requests} requests, {result['errors']} errors, {result['wall']:.2f} s, "
        f"{requests / result['wall']:.2f} req/s, {images / result['wall']:.2f} images/s, "
        f"latency p50 {result['p50']:.2f} s p95 {result['p95']:.2f} s, {result['decodes']} decode calls"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size", default=None, help="WxH (default: the model's canvas)")
    parser.add_argument("--n", type=int, default=1, help="images per request")
    parser.add_argument("--max-batch-images", type=int, default=16)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.model is None and not (DEFAULT_MODEL / "config.json").is_file():
        parser.error(f"the shipped model is not installed at {DEFAULT_MODEL}; pass --model")

    options = [
        "--no-ui",
        "--log-level",
        "warning",
        "--max-queue",
        str(max(64, args.clients)),
        "--max-images",
        str(args.n),
        "--max-batch-images",
        str(args.max_batch_images),
    ]
    options += ["--model", args.model] if args.model else []
    options += ["--device", args.device] if args.device else []
    bodies = [
        {"prompt": f"shape number {i}", "n": args.n, "seed": i} | ({"size": args.size} if args.size else {})
        for i in range(args.clients)
    ]
    with server_process(*options) as url:
        asyncio.run(run(url, bodies[:1], concurrent=False))  # warm-up
        batched = asyncio.run(run(url, bodies, concurrent=True))
        alone = asyncio.run(run(url, bodies, concurrent=False))
    print(
        f"model {args.model or DEFAULT_MODEL}, size {args.size or 'default'}, n={args.n}, "
        f"{args.clients} clients, batches of at most {args.max_batch_images} images"
    )
    images = args.clients * args.n
    report("concurrent", batched, args.clients, images)
    report("one at a time", alone, args.clients, images)
    print(f"batching gain: {alone['wall'] / batched['wall']:.2f}x")


if __name__ == "__main__":
    main()
