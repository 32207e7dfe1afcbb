"""Resident memory of ``HFOCUUnlearner.fit`` + one deletion in replay mode and with a file-backed store, for this
checkout and (``--before PATH``) another one, side by side in one run.

Each case runs in a fresh process (the measurement script of ``tests/test_memory.py``): resident anonymous memory
(``RssAnon``) is sampled every millisecond while it fits and deletes, with glibc returning freed memory at once, and
reported as a multiple of the n x d approximator block (float32). Memory-mapped store files are file pages and are
not counted. Linux only.

    python benchmarks/bench_memory.py [--before /path/to/older/checkout] [--out benchmarks/results/memory.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _test_module():
    spec = importlib.util.spec_from_file_location("test_memory", ROOT / "tests" / "test_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(repo: Path, case: str) -> dict:
    mod = _test_module()
    n, D, kw, _, _ = mod.CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        kw = {k: (str(Path(tmp) / "store") if v == "STORE" else v) for k, v in kw.items()}
        env = {**os.environ, "PYTHONPATH": str(repo), "MALLOC_MMAP_THRESHOLD_": "65536",
               "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
        res = subprocess.run([sys.executable, "-c", mod.SCRIPT, str(n), str(D), json.dumps(kw)], capture_output=True,
                             text=True, env=env, timeout=900, cwd=tmp)
    if res.returncode != 0:
        raise SystemExit(f"{case} in {repo} failed:\n{res.stderr[-3000:]}")
    return {"n": n, "D": D, **json.loads(res.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None, help="another checkout to measure side by side")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.md")
    args = ap.parse_args()
    def rev(repo: Path) -> str:
        r = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return r.stdout.strip() or "?"

    repos = [(f"this checkout ({rev(ROOT)})", ROOT)]
    if args.before:
        repos.append((f"before ({rev(args.before)})", args.before.resolve()))
    cases = list(_test_module().CASES)
    lines = ["# Memory of replay mode and store-backed fits (RssAnon, multiples of the n x d float32 block)", "",
             f"Measured by `benchmarks/bench_memory.py` on {platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, one thread; softmax regression on random data, 1 epoch, |B| = 32, 10 classes; "
             "fit plus one 3-record deletion, each case in a fresh process.", "",
             "| case | n | d | n x d | checkout | peak growth | held after fit |", "|---|---|---|---|---|---|---|"]
    for case in cases:
        for label, repo in repos:
            m = measure(repo, case)
            lines.append(f"| {case} | {m['n']} | {m['nd'] // (4 * m['n'])} | {m['nd'] / 2 ** 20:.1f} MiB | {label} | "
                         f"{m['peak'] / m['nd']:.2f} | {m['after'] / m['nd']:.3f} |")
            print(lines[-1], flush=True)
    lines += ["", "The time-outer layout advances every vector at every step, so it holds the block while it trains "
              "by design (its peak is not a defect); only what it keeps after the store is written matters there."]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
