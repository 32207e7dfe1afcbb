"""Regenerate ``reports/example/``: the default audit's complete output, kept in the repository.

    python -m unlearn_audit.audit.regenerate_example            # from the repository root

It runs exactly what ``unlearn-audit audit --out reports/example --force`` runs (the default configuration, which is
also ``examples/digits.toml``), with one thread so the numbers match a laptop run, and prints what it wrote.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "example",
                    help="folder to (re)write (default: reports/example in this checkout)")
    ap.add_argument("--no-pdf", action="store_true", help="skip report.pdf")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from unlearn_audit.audit import execute_audit
    from unlearn_audit.config import load_config

    cfg = load_config(None)
    start = time.perf_counter()
    results = execute_audit(cfg, args.out, force=True, pdf=not args.no_pdf)
    seconds = time.perf_counter() - start
    for p in sorted(args.out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size / 1000:9.1f} kB  {p.relative_to(args.out.parent)}")
    v = results["verdict"]
    print(f"verdict: {v['status']} (exit code {v['exit_code']}); audit + report took {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
