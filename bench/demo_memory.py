"""The demo's memory and wall time, side by side: `tunelab compare configs/compare_dialogsum.yaml` run twice in
one invocation, once by tunelab as it was before the memory work of issue #15 (the source tree of a git revision,
its own demo config and defaults) and once by the working tree, each in its own process so that each process's
peak RSS is its own.

    python bench/demo_memory.py [--before-revision REV] [--only before|after]

Per configuration it records the peak RSS of `tunelab compare` with all its processes (tunelab runs each arm in
a process of its own since issue #15: the largest of the kernel's high-water marks, from wait4 and each arm's
phases, and the sum over the process tree sampled every 0.2 s, whichever is larger), the wall time,
and per arm the peak of each phase (metrics.json -> memory_phases), the training time and the scores with their
95% CIs; it prints the ratios after/before and writes bench/results/demo_memory.json (+ .md). Finished arms are
reused by `tunelab compare`, so an interrupted measurement continues; delete runs/bench-demo-memory-* to start
again (the wall time is only comparable when both configurations ran from scratch in the same invocation).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import yaml

# The environment as the user gave it: importing tunelab (below) sets process-wide defaults (tunelab/native.py)
# that the *before* revision did not have, so each configuration starts from this one.
USER_ENVIRONMENT = dict(os.environ)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "src"))

# The last commit before issue #15's memory work (gradient checkpointing `auto`, freed memory handed back between
# phases, logits only at completion positions): tunelab as `make demo` ran when the issue was filed.
BEFORE_REVISION = "5ae2530"
CONFIGURATIONS = ("before", "after")


def source_tree(label: str, revision: str) -> Path:
    """The tree whose `src/` and `configs/` a configuration runs: the working tree, or `revision` unpacked."""
    if label == "after":
        return ROOT
    tree = ROOT / "runs" / f"bench-demo-memory-source-{revision}"
    if not (tree / "src").is_dir():
        archive = subprocess.run(
            ["git", "archive", revision, "src", "configs"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        partial = tree.with_name(tree.name + ".tmp")
        partial.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(tree)
    return tree


def run_configuration(label: str, revision: str) -> dict:
    tree_root = source_tree(label, revision)
    tree = yaml.safe_load((tree_root / "configs" / "compare_dialogsum.yaml").read_text())
    tree["name"] = f"bench-demo-memory-{label}"
    tree["output_dir"] = str(ROOT / "runs")
    derived = ROOT / "runs" / f"bench-demo-memory-{label}.yaml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(yaml.safe_dump(tree, sort_keys=False))
    cmd = [sys.executable, "-m", "tunelab.cli.main", "compare", "-q", str(derived)]
    from tunelab.paths import data_root

    env = {**USER_ENVIRONMENT, "TQDM_DISABLE": "1", "PYTHONPATH": str(tree_root / "src")}
    if (data := data_root()) is not None:
        env["TUNELAB_DATA_DIR"] = str(data.resolve())
    log = ROOT / "runs" / f"bench-demo-memory-{label}.log"
    t0 = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        tree_peak = TreeRss(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        tree_peak.stop()
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label}: tunelab compare failed\n{log.read_text()[-3000:]}")
    arms = collect_arms(ROOT / "runs" / tree["name"])
    # tunelab resets the kernel's high-water mark at each phase (which ru_maxrss also reads), so the process's peak
    # is the largest of its phases' peaks (they cover the whole run after start-up) and what wait4 reports
    phase_peaks = [p for a in arms.values() for p in a["phases"].values()]
    return {
        "source": f"git revision {revision}" if label == "before" else "working tree",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "process_peak_rss_bytes": max([usage.ru_maxrss * 1024, tree_peak.peak, *phase_peaks]),
        "process_tree_sampled_peak_rss_bytes": tree_peak.peak,
        "wall_seconds": wall,
        "arms": arms,
    }


class TreeRss:
    """The largest sum of resident memory over a process and all its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.wait(0.2):
            total = 0
            try:
                for proc in [self.root, *self.root.children(recursive=True)]:
                    total += proc.memory_info().rss
            except psutil.Error:
                continue  # a process ended between listing and reading
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def collect_arms(directory: Path) -> dict:
    arms = {}
    for metrics_file in sorted(directory.glob("*/metrics.json")):
        m = json.loads(metrics_file.read_text())
        phases = m.get("memory_phases") or {}
        after = m.get("after") or {}
        rouge = (after.get("rouge") or {}).get("rougeL") or {}
        arms[metrics_file.parent.name] = {
            "peak_rss_bytes": max((p["peak_rss_bytes"] for p in phases.values()), default=None),
            "phases": {k: p["peak_rss_bytes"] for k, p in phases.items()},
            "train_seconds": (m.get("training") or {}).get("seconds"),
            "rougeL": rouge.get("f1"),
            "rougeL_ci95": rouge.get("f1_ci95"),
        }
    return arms


def report(result: dict) -> str:
    before, after = result["configurations"]["before"], result["configurations"]["after"]
    gib = 2**30
    when = (
        "run twice in one invocation"
        if result.get("same_invocation", True)
        else f"run in two invocations (*before* {before.get('measured', 'earlier')}, *after* "
        f"{after.get('measured', 'later')}: compare the wall times with care)"
    )
    lines = [
        f"# bench/demo_memory.py, {result['date']}, {result['machine']}",
        "",
        f"`make demo`'s comparison {when}, each in its own process and from scratch: *before* = "
        f"tunelab at {before['source']} (before the memory work of issue #15) with its own demo config, *after* = "
        f"the {after['source']}; both with their defaults.",
        "",
        "| | before | after | after / before |",
        "|---|---|---|---|",
        f"| whole `tunelab compare` (all its processes), peak RSS | {before['process_peak_rss_bytes'] / gib:.2f} GiB | "
        f"{after['process_peak_rss_bytes'] / gib:.2f} GiB | "
        f"{after['process_peak_rss_bytes'] / before['process_peak_rss_bytes']:.2f} |",
        f"| wall time | {before['wall_seconds']:.0f} s | {after['wall_seconds']:.0f} s | "
        f"{after['wall_seconds'] / before['wall_seconds']:.2f} |",
    ]
    for arm, a in after["arms"].items():
        b = before["arms"].get(arm)
        if not b or not a["peak_rss_bytes"] or not b["peak_rss_bytes"]:
            continue
        lines.append(
            f"| {arm}: peak RSS (largest phase) | {b['peak_rss_bytes'] / gib:.2f} GiB | "
            f"{a['peak_rss_bytes'] / gib:.2f} GiB | {a['peak_rss_bytes'] / b['peak_rss_bytes']:.2f} |"
        )
        if a["train_seconds"] and b["train_seconds"]:
            lines.append(
                f"| {arm}: training time | {b['train_seconds']:.0f} s | {a['train_seconds']:.0f} s | "
                f"{a['train_seconds'] / b['train_seconds']:.2f} |"
            )
        if a["rougeL_ci95"] and b["rougeL_ci95"]:
            lines.append(
                f"| {arm}: ROUGE-L (95% CI) | {b['rougeL']:.2f} [{b['rougeL_ci95'][0]:.2f}, {b['rougeL_ci95'][1]:.2f}]"
                f" | {a['rougeL']:.2f} [{a['rougeL_ci95'][0]:.2f}, {a['rougeL_ci95'][1]:.2f}] | "
                f"{a['rougeL'] - b['rougeL']:+.2f} |"
            )
    return "\n".join(lines) + "\n"


def rewrite_report(out: Path) -> None:
    """Re-collect each configuration's arms from its run directories and rewrite the .md (wall times kept)."""
    result = json.loads(out.read_text())
    for label, conf in result["configurations"].items():
        runs = ROOT / "runs" / f"bench-demo-memory-{label}"
        if not runs.is_dir():  # measured on another machine or before a clean-up: keep what was recorded
            continue
        conf["arms"] = collect_arms(runs)
        phase_peaks = [p for a in conf["arms"].values() for p in a["phases"].values()]
        conf["process_peak_rss_bytes"] = max([conf["process_peak_rss_bytes"], *phase_peaks])
    out.write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    out.with_suffix(".md").write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before-revision", default=BEFORE_REVISION, help="the git revision measured as *before*")
    ap.add_argument("--only", choices=sorted(CONFIGURATIONS), help="measure one configuration (kept with the other)")
    ap.add_argument("--out", default=str(RESULTS / "demo_memory.json"))
    ap.add_argument("--report", action="store_true", help="only re-read the run directories and rewrite the report")
    args = ap.parse_args()
    if args.report:
        rewrite_report(Path(args.out))
        return
    import torch

    from tunelab.environment import describe_environment

    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {"configurations": {}}
    result["same_invocation"] = not args.only  # else the wall times come from two invocations (other load)
    for label in [args.only] if args.only else list(CONFIGURATIONS):
        print(f"measuring {label} ...", file=sys.stderr)
        result["configurations"][label] = run_configuration(label, args.before_revision)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # kept if the next configuration is interrupted
    env = describe_environment(torch.device("cpu"))
    cpu = env.get("cpu") or {}
    result.update(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{cpu.get('model', 'unknown CPU')}, {env.get('torch_threads')} threads",
        environment=env,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if set(result["configurations"]) == set(CONFIGURATIONS):
        text = report(result)
        out.with_suffix(".md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
