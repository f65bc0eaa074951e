"""The baseline check of a 20,000-file image against ``find DIR -ls`` over the same tree.

The image is built (not timed) from the benchmark tree that ``bench_build.py`` generates and
caches (default 20,000 files, 200 MB of half text, half random bytes; ``--quick`` 2,000 files,
20 MB) into a fresh home. Timed, best of ``--repeat``:

* ``check_image()``: the whole ``immutrail check`` minus the CLI: read and merge the layers
  (digests of every file), scan every layer's file contents for secrets, the twelve built-in
  rules, sign and attach the statement, append ``baseline.checked``; also its phases alone
  (``load_image_input``, the secrets scan, the rules);
* with a user Rego rule (the image description handed to regopy and one rule over every file);
* the baseline, in the same run: ``find DATA -ls > /dev/null`` over the unpacked tree (the
  repository's work tree, page cache warm).

The ratio printed is check time / find time (how many ``find -ls`` walks one check costs).
Note that the check reads file *contents* (decompressing the layer twice: once to merge and
hash, once to scan for secrets) while ``find -ls`` reads only metadata.

    .venv/bin/python bench/bench_baseline.py [--quick] [--files N] [--mb N] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import ORIGIN, header, machine_info, print_table, scratch_dir, write_json
from bench_build import FULL, QUICK, prepare_repo

RULE = """\
package immutrail.rules.bench

import rego.v1

metadata := {"id": "BENCH-1", "title": "no world-writable files", "severity": "low"}

deny contains f.path if {
    some f in input.files
    f.type == "file"
    bits.and(f.mode, 2) != 0
}
"""


def find_ls(tree: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(f"find {tree} -ls > /dev/null", shell=True, check=True, executable="/bin/bash")
    return time.perf_counter() - t0


def measure(repo: Path, work: Path, repeat: int) -> dict[str, Any]:
    from immutrail.artifacts.builder import build
    from immutrail.artifacts.statements import ledger_keys
    from immutrail.artifacts.store import Store
    from immutrail.baseline.checks import CheckContext, run_checks
    from immutrail.baseline.image_input import load_image_input
    from immutrail.baseline.runner import check_image
    from immutrail.baseline.secrets import scan_layers
    from immutrail.ledger.home import init_ledger, open_ledger

    home = work / "home"
    ledger, _ = init_ledger(home, origin=ORIGIN)
    ledger.close()
    digest = build(repo / "image.yaml", home, actor="bench").digest
    rules = work / "rules"
    rules.mkdir()
    (rules / "bench.rego").write_text(RULE)
    store = Store.for_home(home)
    out: dict[str, list[float]] = {
        k: [] for k in ("check", "check_rego", "input", "secrets", "rules", "find")
    }
    ledger = open_ledger(home)
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = check_image(store, ledger, home, digest, "bench")
            out["check"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            check_image(store, ledger, home, digest, "bench", rules_dir=rules)
            out["check_rego"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            image = load_image_input(store, digest, ledger_keys(ledger))
            out["input"].append(time.perf_counter() - t0)
            entries = {e.path: e.layer for e in image.rootfs.entries()}
            t0 = time.perf_counter()
            secrets = scan_layers(image.layer_paths, lambda p, n, e=entries: e.get(p) == n)
            out["secrets"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            list(run_checks(CheckContext(image, secrets)))
            out["rules"].append(time.perf_counter() - t0)
            out["find"].append(find_ls(repo / "data"))
    finally:
        ledger.close()
    return {
        "seconds": out,
        "files": len(image.rootfs),
        "failed_rules": [r["id"] for r in result.results if r["status"] == "fail"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="2,000 files, 20 MB")
    ap.add_argument("--files", type=int)
    ap.add_argument("--mb", type=int)
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds; best is reported")
    args, unknown = ap.parse_known_args(argv)  # run_all.py passes its extras to everyone
    if unknown:
        print(f"   ignoring arguments meant for other benchmarks: {unknown}")
    files, mb = QUICK if args.quick else FULL
    files, mb = args.files or files, args.mb or mb
    header("baseline", f"immutrail check of {files:,} files / {mb} MB vs find -ls", args.quick)
    info = machine_info()
    repo, size = prepare_repo(files, mb, rebuild=False)
    find_ls(repo / "data")  # warm the page cache for find
    with scratch_dir("baseline") as work:
        report = measure(repo, work, max(1, args.repeat))
    best = {k: min(v) for k, v in report["seconds"].items()}
    t_find = best["find"]
    rows = [
        ("check_image() (built-in rules, attest, record)", best["check"], best["check"] / t_find),
        ("check_image() + one user Rego rule", best["check_rego"], best["check_rego"] / t_find),
        ("  phase: load_image_input (merge + hash)", best["input"], best["input"] / t_find),
        ("  phase: secrets scan of every layer", best["secrets"], best["secrets"] / t_find),
        ("  phase: the twelve rules", best["rules"], best["rules"] / t_find),
        ("find DATA -ls > /dev/null", t_find, 1.0),
    ]
    print_table(
        f"Baseline check of {report['files']:,} entries, {size / 1e6:.0f} MB "
        f"(best of {max(1, args.repeat)})",
        ("what", "seconds", "x find -ls"),
        rows,
    )
    ratio = best["check"] / t_find
    print(f"\n   ratio check / find -ls: {ratio:.1f}; load average at end {os.getloadavg()}")
    write_json(
        "baseline",
        {
            "machine": info,
            "loadavg_at_end": os.getloadavg(),
            "quick": args.quick,
            "files": files,
            "tree_bytes": size,
            "entries": report["files"],
            "seconds": report["seconds"],
            "best": best,
            "ratio_check_to_find": ratio,
            "ratio_check_rego_to_find": best["check_rego"] / t_find,
            "failed_rules": report["failed_rules"],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
