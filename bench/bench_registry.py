"""Registry push and pull throughput against ``skopeo copy``, on Debian's ``docker-registry``.

An image with one layer of about ``--mb`` MB (default 200; ``--quick`` 20) is built from a cached
git repository of ``--mb`` MB of random bytes in ``--files`` files (incompressible, so the gzip
layer is about as big as the tree), into a fresh home. A ``docker-registry`` (distribution 2.8,
started by ``tests/artifacts/services/registry.py``) listens on a free 127.0.0.1 port, plain HTTP.

Timed, best of ``--repeat`` (each round uses new repository names, so every blob is sent again):

* ``immutrail.artifacts.registry.push(store, "bench:1", HOST/oursN/app:1)``, without referrers
  (skopeo copies no referrers either), against
  ``skopeo copy --dest-tls-verify=false oci:STORE:bench:1 docker://HOST/skopeoN/app:1``;
* ``pull(fresh store, HOST/oursN/app:1)`` against
  ``skopeo copy --src-tls-verify=false docker://HOST/skopeoN/app:1 oci:FRESH:app:1``.

Ratio = skopeo time / immutrail time (>1 means immutrail is faster). Also the in-process peak RSS
of push and pull (VmHWM, reset before each), and a push with referrers (SBOM, provenance).

    .venv/bin/python bench/bench_registry.py [--quick] [--mb N] [--files N] [--repeat N]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from _common import (
    ORIGIN,
    ROOT,
    current_rss_mb,
    header,
    machine_info,
    phase_peak_rss_mb,
    print_table,
    print_targets,
    reset_peak_rss,
    scratch_dir,
    target,
    write_json,
)
from bench_build import prepare_repo


def _registry_service() -> Any:
    path = ROOT / "tests" / "artifacts" / "services" / "registry.py"
    spec = importlib.util.spec_from_file_location("_bench_registry_service", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _skopeo(*args: str) -> float:
    """Time one skopeo run with an empty HOME: otherwise its blob-info cache remembers where
    earlier rounds put each blob and it mounts the blob across repositories instead of sending it
    (0.06 s for 200 MB), which is not the job measured."""
    with scratch_dir("skopeo-home") as home:
        env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
        t0 = time.perf_counter()
        subprocess.run(
            ["skopeo", "--insecure-policy", *args], check=True, capture_output=True, env=env
        )
        return time.perf_counter() - t0


def _phase(fn: Any) -> tuple[float, float, Any]:
    reset_peak_rss()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, phase_peak_rss_mb(), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="a 20 MB layer")
    ap.add_argument("--mb", type=int)
    ap.add_argument("--files", type=int)
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--rebuild", action="store_true", help="regenerate the cached repository")
    args, unknown = ap.parse_known_args(argv)  # run_all.py passes its extras to everyone
    if unknown:
        print(f"   ignoring arguments meant for other benchmarks: {unknown}")
    mb = args.mb or (20 if args.quick else 200)
    files = args.files or (20 if args.quick else 200)
    repeat = args.repeat or (1 if args.quick else 2)
    header("registry", f"push/pull of a {mb} MB layer vs skopeo copy", args.quick)
    if shutil.which("skopeo") is None:
        print("skopeo is not installed (apt-get install skopeo)")
        return 1
    info = machine_info()

    from immutrail.artifacts.builder import build
    from immutrail.artifacts.registry import pull, push
    from immutrail.artifacts.store import Store
    from immutrail.ledger.home import init_ledger

    service = _registry_service()
    repo, size = prepare_repo(files, mb, args.rebuild, compressible=0.0, label="registry-tree")
    rows: list[dict[str, Any]] = []
    with scratch_dir("registry") as work:
        home = work / "home"
        ledger, _ = init_ledger(home, origin=ORIGIN)
        ledger.close()
        built = build(repo / "image.yaml", home, tag="bench:1", actor="bench")
        layer = built.built[0].descriptor
        total = sum(d.size for d in built.layers) + built.config.size + built.manifest.size
        print(f"   image {built.digest}, layer {layer.size / 1e6:.1f} MB", flush=True)
        store = Store.for_home(home)
        rss_idle = current_rss_mb()
        for r in range(repeat):
            # a fresh registry per round: no blob of an earlier round can be mounted or found
            with service.running_registry(work / f"registry-{r}") as registry:
                host = registry.host
                t_push, rss_push, _ = _phase(
                    lambda r=r, host=host: push(
                        store, "bench:1", f"{host}/ours{r}/app:1", include_referrers=False
                    )
                )
                s_push = _skopeo(
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{store.root}:bench:1",
                    f"docker://{host}/skopeo{r}/app:1",
                )
                fresh = Store.for_home(work / f"pull-home-{r}", create=True)
                t_pull, rss_pull, pulled = _phase(
                    lambda r=r, fresh=fresh, host=host: pull(
                        fresh, f"{host}/ours{r}/app:1", include_referrers=False
                    )
                )
                assert pulled.digest == built.digest, (pulled.digest, built.digest)
                s_pull = _skopeo(
                    "copy",
                    "--src-tls-verify=false",
                    f"docker://{host}/skopeo{r}/app:1",
                    f"oci:{work / f'skopeo-oci-{r}'}:app:1",
                )
                shutil.rmtree(work / f"pull-home-{r}", ignore_errors=True)
                shutil.rmtree(work / f"skopeo-oci-{r}", ignore_errors=True)
                rows.append(
                    {
                        "push_s": t_push,
                        "skopeo_push_s": s_push,
                        "pull_s": t_pull,
                        "skopeo_pull_s": s_pull,
                        "push_peak_rss_mb": rss_push,
                        "pull_peak_rss_mb": rss_pull,
                    }
                )
                print(f"   round {r + 1}: {rows[-1]}", flush=True)
                if r == repeat - 1:
                    t_ref, _, with_refs = _phase(
                        lambda host=host: push(
                            store, "bench:1", f"{host}/withrefs/app:1", include_referrers=True
                        )
                    )

    best = {k: min(row[k] for row in rows) for k in rows[0]}
    mbs = total / 1e6
    push_ratio = best["skopeo_push_s"] / best["push_s"]
    pull_ratio = best["skopeo_pull_s"] / best["pull_s"]
    print_table(
        f"Registry transfer of {mbs:.1f} MB (best of {repeat}; docker-registry on {host})",
        ("what", "seconds", "MB/s", "skopeo s / ours"),
        [
            ("immutrail push", best["push_s"], mbs / best["push_s"], push_ratio),
            (
                "skopeo copy oci: -> docker://",
                best["skopeo_push_s"],
                mbs / best["skopeo_push_s"],
                1.0,
            ),
            ("immutrail pull (fresh store)", best["pull_s"], mbs / best["pull_s"], pull_ratio),
            (
                "skopeo copy docker:// -> oci:",
                best["skopeo_pull_s"],
                mbs / best["skopeo_pull_s"],
                1.0,
            ),
            (
                f"immutrail push with {len(with_refs.referrers)} referrers, new repo",
                t_ref,
                mbs / t_ref,
                best["skopeo_push_s"] / t_ref,
            ),
        ],
    )
    print_table(
        "Memory (this process, VmHWM reset before each phase)",
        ("phase", "peak RSS MB"),
        [
            ("idle, after the build", rss_idle),
            ("push", best["push_peak_rss_mb"]),
            ("pull", best["pull_peak_rss_mb"]),
        ],
    )
    # The issue asks for push/pull throughput "vs skopeo copy" without a number; 0.5 is the
    # build's bar, used here so that the table says something.
    targets = [
        target("push throughput / skopeo copy (bar 0.5 assumed)", push_ratio, 0.5),
        target("pull throughput / skopeo copy (bar 0.5 assumed)", pull_ratio, 0.5),
    ]
    print_targets(targets)
    print(f"\n   load average at end {os.getloadavg()}")
    write_json(
        "registry",
        {
            "machine": info,
            "loadavg_at_end": os.getloadavg(),
            "quick": args.quick,
            "image_bytes": total,
            "layer_bytes": layer.size,
            "tree_bytes": size,
            "rounds": rows,
            "best": best,
            "push_with_referrers_s": t_ref,
            "ratio_push": push_ratio,
            "ratio_pull": pull_ratio,
            "targets": targets,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
