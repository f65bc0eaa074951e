"""Run every benchmark, each in its own process (own peak RSS, failures isolated), then summarize.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]
    scripts/with-postgres.sh .venv/bin/python bench/run_all.py      # + PostgreSQL

Extra arguments after ``--`` go to every benchmark (e.g. ``-- --no-pg``). Results:
``bench/results/<name>.json`` per benchmark and ``bench/results/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, fmt_num, print_table

BENCHMARKS = [
    ("ledger_append", "bench_ledger_append.py"),
    ("ledger_proofs", "bench_ledger_proofs.py"),
    ("ledger_verify", "bench_ledger_verify.py"),
    ("build", "bench_build.py"),
    ("registry", "bench_registry.py"),
    ("scan", "bench_scan.py"),
    ("baseline", "bench_baseline.py"),
    ("proxy", "bench_proxy.py"),
    ("endpoint", "bench_endpoint.py"),
    ("deploy", "bench_deploy.py"),
    ("integrity", "bench_integrity.py"),
    ("drift_exec", "bench_drift_exec.py"),
    ("audit", "bench_audit.py"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--only", nargs="*", help="benchmark names to run (default: all)")
    ap.add_argument("extra", nargs="*", help="arguments passed to every benchmark (after --)")
    args = ap.parse_args(argv)
    here = Path(__file__).resolve().parent
    failed, summary = [], {"quick": args.quick, "benchmarks": {}}
    for name, script in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        cmd = [
            sys.executable,
            str(here / script),
            *(["--quick"] if args.quick else []),
            *args.extra,
        ]
        print(f"\n######## {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        elapsed = time.perf_counter() - t0
        entry: dict[str, object] = {"exit_code": rc, "seconds": elapsed}
        result = RESULTS / f"{name}.json"
        if rc == 0 and result.exists():
            data = json.loads(result.read_text())
            entry["targets"] = data.get("targets", [])
            entry["process_peak_rss_mb"] = data.get("process_peak_rss_mb")
        else:
            failed.append(name)
        summary["benchmarks"][name] = entry

    rows = []
    for name, entry in summary["benchmarks"].items():
        for t in entry.get("targets", []):  # type: ignore[union-attr]
            rows.append(
                (
                    t["target"],
                    t["value"],
                    f"{t['comparison']} {fmt_num(t['goal'])} {t['unit']}",
                    "MET" if t["met"] else "NOT MET",
                )
            )
        rows.append(
            (
                f"({name}: {entry['seconds']:.0f} s, exit {entry['exit_code']}, peak RSS "
                f"{fmt_num(entry.get('process_peak_rss_mb'))} MB)",
                "",
                "",
                "",
            )
        )
    print_table("Summary of all targets", ("target", "measured", "goal", "status"), rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
