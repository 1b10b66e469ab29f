"""`tunelab serve` under load: 16 concurrent greedy clients over a mix of the base model and two LoRA adapters
on smollm2-135m-instruct, against the same requests sent one at a time to the same server. Prints requests/s,
tokens/s, p50/p95 latency and the ratio, checks that every answer is identical both ways, then measures the
memory of one base + 8 adapters against 8 merged models (each in its own process). Writes
bench/results/serve.json.

    python bench/serve.py [--clients 16] [--per-client 3] [--max-tokens 48] [--skip-memory]

The adapters are LoRA r=16 on all linear layers with small random weights (so each changes the answers);
serving cost does not depend on how they were trained.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def make_adapters(n: int, folder: Path) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.models.registry import pull_model

    base_dir = pull_model("smollm2-135m-instruct")
    out = []
    for i in range(n):
        torch.manual_seed(i)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base_dir),
            LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.002)
        model.save_pretrained(folder / f"adapter-{i}")
        out.append(folder / f"adapter-{i}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(args: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli.main", "serve", *args, "--port", str(port)], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def ask(port: int, model: str, text: str, max_tokens: int) -> tuple[str, int, float]:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=600)
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "task_prompt": True,
            }
        ),
        {"Content-Type": "application/json"},
    )
    body = json.loads(conn.getresponse().read())
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"], time.perf_counter() - t0


def summary(latencies: list[float], tokens: int, seconds: float, n: int) -> dict:
    q = statistics.quantiles(latencies, n=20, method="inclusive")
    return {
        "requests": n,
        "seconds": seconds,
        "requests_per_second": n / seconds,
        "tokens_per_second": tokens / seconds,
        "p50_latency_s": statistics.median(latencies),
        "p95_latency_s": q[18],
    }


def rss_worker(kind: str, n: int, adapters: list[str]) -> None:
    """Load one base + n adapters, or n merged models, and print the process's resident memory."""
    import psutil
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab.models.registry import pull_model

    base_dir = pull_model("smollm2-135m-instruct")
    keep = []
    if kind == "adapters":
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, adapters[0], adapter_name="a0")
        for i, a in enumerate(adapters[1:n], 1):
            model.load_adapter(a, adapter_name=f"a{i}")
        keep.append(model)
    else:
        for a in adapters[:n]:
            keep.append(
                PeftModel.from_pretrained(
                    AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), a
                ).merge_and_unload()
            )
    print(json.dumps({"rss_bytes": psutil.Process().memory_info().rss}))


def measure_rss(kind: str, n: int, adapters: list[Path]) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-worker", kind, str(n), *map(str, adapters)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_bytes"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--per-client", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--rss-worker", nargs="+")
    args = p.parse_args()
    if args.rss_worker:
        kind, n, *adapters = args.rss_worker
        rss_worker(kind, int(n), adapters)
        return

    from tunelab.paths import data_root

    dialogues = [
        json.loads(x)["dialogue"]
        for x in (data_root() / "dialogsum" / "dialogsum.test.jsonl").read_text().splitlines()[: args.clients]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(8, Path(tmp))
        proc, port = start_server(
            [
                "--model",
                "smollm2-135m-instruct",
                "--adapter",
                f"a={adapters[0]}",
                "--adapter",
                f"b={adapters[1]}",
                "--max-batch-size",
                str(args.clients),
            ]
        )
        try:
            models = ["smollm2-135m-instruct", "a", "b"]
            jobs = [
                (models[(c + k) % 3], dialogues[c % len(dialogues)])
                for c in range(args.clients)
                for k in range(args.per_client)
            ]
            ask(port, models[0], dialogues[0], 4)  # warm-up
            t0 = time.perf_counter()
            alone = [ask(port, m, d, args.max_tokens) for m, d in jobs]
            sequential = summary([x[2] for x in alone], sum(x[1] for x in alone), time.perf_counter() - t0, len(jobs))

            def client(c: int) -> list:
                return [ask(port, *jobs[c * args.per_client + k], args.max_tokens) for k in range(args.per_client)]

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                together = [r for rs in pool.map(client, range(args.clients)) for r in rs]
            concurrent = summary(
                [x[2] for x in together], sum(x[1] for x in together), time.perf_counter() - t0, len(jobs)
            )
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        identical = sum(a[0] == b[0] for a, b in zip(alone, together))
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d"),
            "model": "smollm2-135m-instruct",
            "precision": "fp32",
            "clients": args.clients,
            "requests": len(jobs),
            "max_tokens": args.max_tokens,
            "one_at_a_time": sequential,
            "concurrent": concurrent,
            "throughput_ratio": concurrent["requests_per_second"] / sequential["requests_per_second"],
            "identical_outputs": f"{identical}/{len(jobs)}",
        }
        if not args.skip_memory:
            result["memory"] = {
                "base_plus_8_adapters_rss_bytes": measure_rss("adapters", 8, adapters),
                "8_merged_models_rss_bytes": measure_rss("merged", 8, adapters),
            }
            result["memory"]["ratio"] = (
                result["memory"]["base_plus_8_adapters_rss_bytes"] / result["memory"]["8_merged_models_rss_bytes"]
            )
    from tunelab.environment import cpu_description

    result["cpu"] = cpu_description()
    (ROOT / "bench" / "results" / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    s, c = sequential, concurrent
    print(
        f"{len(jobs)} requests, {args.clients} clients, max_tokens {args.max_tokens}, fp32; identical "
        f"{result['identical_outputs']}"
    )
    print(
        f"one at a time: {s['requests_per_second']:.2f} req/s, {s['tokens_per_second']:.1f} tok/s, "
        f"p50 {s['p50_latency_s']:.2f} s, p95 {s['p95_latency_s']:.2f} s"
    )
    print(
        f"concurrent:    {c['requests_per_second']:.2f} req/s, {c['tokens_per_second']:.1f} tok/s, "
        f"p50 {c['p50_latency_s']:.2f} s, p95 {c['p95_latency_s']:.2f} s"
    )
    print(f"throughput ratio: {result['throughput_ratio']:.2f}x")
    if "memory" in result:
        m = result["memory"]
        print(
            f"memory: base + 8 adapters {m['base_plus_8_adapters_rss_bytes'] / 2**30:.2f} GiB vs 8 merged models "
            f"{m['8_merged_models_rss_bytes'] / 2**30:.2f} GiB ({m['ratio']:.2f}x)"
        )


if __name__ == "__main__":
    main()
