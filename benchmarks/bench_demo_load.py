"""Load test for the Gradio demo: N concurrent /segment requests over loopback through gradio_client.

    .venv/bin/python benchmarks/bench_demo_load.py                  # tiny random model, 20 requests
    .venv/bin/python benchmarks/bench_demo_load.py --model outputs/larvseg-emoji --requests 20

Starts `demo/app.py` as its own process on 127.0.0.1 (a free port), sends the requests from threads
(one gradio_client.Client each, released together), checks that every one succeeded, and prints the
wall time, per-request latency percentiles and the server process's peak RSS (VmHWM). Without --model it
uses outputs/larvseg-emoji when present, else a small random model (ViT, 1,000 classes, 256 px input).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_small_model(directory: Path, num_classes: int, image_size: int) -> Path:
    import torch

    from larvseg_hf import LarvSegConfig, LarvSegForSemanticSegmentation, LarvSegImageProcessor

    torch.manual_seed(0)
    config = LarvSegConfig(
        backbone_config=dict(
            model_type="vit",
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            patch_size=16,
            image_size=image_size,
        ),
        id2label={i: f"class {i:05d}" for i in range(num_classes)},
        base_label_ids=list(range(num_classes // 2)),
    )
    LarvSegForSemanticSegmentation(config).save_pretrained(directory)
    LarvSegImageProcessor(size={"height": image_size, "width": image_size}, size_divisor=16).save_pretrained(
        directory
    )
    return directory


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size of a process (Linux VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"The demo server exited with code {process.returncode} before it was up.")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"The demo server did not answer at {url} within {timeout:.0f} s.")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="Model folder or Hub id (default: see module docstring)."
    )
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--image_width", type=int, default=640)
    parser.add_argument("--image_height", type=int, default=480)
    parser.add_argument("--mode", default="all classes", choices=["all classes", "top-k found"])
    parser.add_argument("--classes", type=int, default=1000, help="Vocabulary of the random model.")
    parser.add_argument("--input_size", type=int, default=256, help="Processor size of the random model.")
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds allowed for the whole run.")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    workdir = Path(tempfile.mkdtemp(prefix="larvseg_bench_"))
    model = args.model
    if model is None:
        default = REPO_ROOT / "outputs" / "larvseg-emoji"
        model = (
            str(default)
            if default.is_dir()
            else str(make_small_model(workdir / "model", args.classes, args.input_size))
        )
    rng = np.random.default_rng(0)
    images = []
    for i in range(args.requests):
        path = workdir / f"scene_{i:02d}.png"
        array = rng.integers(0, 255, (args.image_height, args.image_width, 3), dtype=np.uint8)
        array[: args.image_height // 2, : args.image_width // 3] = rng.integers(0, 255, 3)
        Image.fromarray(array).save(path)
        images.append(path)

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    log_path = workdir / "server.log"  # a file, not a pipe: a full pipe would stall the server
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "demo" / "app.py"),
            "--model",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = time.perf_counter()
        wait_until_up(url, server, timeout=180)
        print(f"server up in {time.perf_counter() - started:.1f} s (pid {server.pid}, model {model})")
        idle_rss = peak_rss_mib(server.pid)

        clients = [Client(url, verbose=False) for _ in range(args.requests)]
        barrier = threading.Barrier(args.requests)
        latencies = [0.0] * args.requests

        def one(i: int):
            barrier.wait()
            start = time.perf_counter()
            result = clients[i].predict(
                handle_file(str(images[i])), args.mode, [], 5, False, False, api_name="/segment"
            )
            latencies[i] = time.perf_counter() - start
            return result

        wall_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.requests) as pool:
            results = list(pool.map(one, range(args.requests), timeout=args.timeout))
        wall = time.perf_counter() - wall_start

        failures = []
        for i, (overlay, table, label_file, status) in enumerate(results):
            ok = (
                overlay is not None
                and label_file is not None
                and Path(label_file).is_file()
                and table["data"]
                and "classes" in status
            )
            if not ok:
                failures.append(f"request {i}: {status!r}")
        peak = peak_rss_mib(server.pid)
        lat = np.array(latencies)
        summary = {
            "requests": args.requests,
            "succeeded": args.requests - len(failures),
            "wall_s": wall,
            "throughput_rps": args.requests / wall,
            "latency_p50_s": float(np.percentile(lat, 50)),
            "latency_p90_s": float(np.percentile(lat, 90)),
            "latency_p99_s": float(np.percentile(lat, 99)),
            "latency_max_s": float(lat.max()),
            "server_rss_after_start_mib": idle_rss or float("nan"),
            "server_peak_rss_mib": peak or float("nan"),
        }
        print(
            f"{summary['succeeded']}/{args.requests} requests succeeded ({args.image_width}x{args.image_height}, "
            f'"{args.mode}"), wall {wall:.2f} s, {summary["throughput_rps"]:.2f} req/s\n'
            f"latency p50 {summary['latency_p50_s']:.2f} s  p90 {summary['latency_p90_s']:.2f} s  "
            f"p99 {summary['latency_p99_s']:.2f} s  max {summary['latency_max_s']:.2f} s\n"
            f"server RSS after start {summary['server_rss_after_start_mib']:.0f} MiB, "
            f"peak {summary['server_peak_rss_mib']:.0f} MiB"
        )
        if failures:
            raise SystemExit("Failed requests:\n" + "\n".join(failures))
        return summary
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        if server.returncode not in (0, -15):
            print(f"server log (tail):\n{log_path.read_text()[-2000:]}", file=sys.stderr)


if __name__ == "__main__":
    main()
