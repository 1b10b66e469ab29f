"""Start-up time of light commands against a bare Python start, measured side by side (median of N runs each,
interleaved so machine noise hits both alike). Writes bench/results/startup.json.

    python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUNELAB = [sys.executable, "-m", "tunelab.cli.main"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "tunelab --help": [*TUNELAB, "--help"],
    "tunelab train --help": [*TUNELAB, "train", "--help"],
    "tunelab tasks": [*TUNELAB, "tasks"],
    "config validation": [sys.executable, "-c", "import tunelab; tunelab.load_config('configs/dialogsum_lora.yaml')"],
    "tunelab data preview": [*TUNELAB, "data", "preview", "configs/dialogsum_lora.yaml", "-n", "3"],
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c pass"])
    result = {
        name: {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "max_s": max(t),
            "ratio_to_python": statistics.median(t) / base,
        }
        for name, t in times.items()
    }
    (ROOT / "bench" / "results" / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result.items():
        print(f"{name:22} median {r['median_s'] * 1000:7.1f} ms  ({r['ratio_to_python']:5.1f}x python -c pass)")


if __name__ == "__main__":
    main()
