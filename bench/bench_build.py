"""Image build throughput and memory against ``tar c | sha256sum`` and ``umoci repack``.

A git repository holding a tree ``data/`` of ``--files`` files and ``--mb`` MB (default 20,000
files, 200 MB; ``--quick`` 2,000 files, 20 MB) is generated once with deterministic pseudo-random
content (half the files compressible text, half random bytes; sizes exponentially distributed)
and cached in ``bench/results/cache/build-tree-<files>-<mb>/``. Two image definitions of one layer
``source: data, destination: /data`` are committed beside it: ``image.yaml`` (gzip layers, the
default) and ``plain.yaml`` (``compression: none``, uncompressed tar layers). A cache made before
``plain.yaml`` existed gets it by amending its one commit (same dates and message), which gives
the commit a fresh generation would.

Timed, in a child process (its own peak RSS): ``immutrail.artifacts.builder.build()`` of each
definition into a fresh home (the whole build: reading blobs through ``git cat-file``, tar, gzip
or not, digests, store, ledger event, SBOM and provenance). Best of ``--repeat``; every round
builds both and runs every baseline too. The first build in a process also pays one-time imports
(``import jsonschema`` and its format checkers, ~0.15 s), so each child then builds the same
definition again into another fresh home, reported as "again in the same process" (what a
long-lived process such as the API server pays). Children run with bytecode cached under
``bench/results/cache/pycache`` even where ``PYTHONDONTWRITEBYTECODE`` is set, as an installed
package would (an untimed first child writes it; see ``child_env``).

Baselines in the same run, on the same tree:

* ``tar c data | sha256sum`` (shell pipeline; the uncompressed tar is hashed, nothing written).
  The target: uncompressed build throughput / this throughput >= 0.5. That is the job of a build
  with ``compression: none`` (an uncompressed layer is a tar and its SHA-256). The gzip build's
  ratio to it is reported too.
* ``tar c data | gzip -6 | sha256sum``: the fair floor of any gzip image build (a layer must be
  compressed; level 6 is the builder's). Reported for the gzip build, no target of its own.
* ``umoci repack`` of a rootless bundle whose rootfs holds the same tree (a gzip layer, config
  and manifest into an OCI layout). Ratio = build throughput / umoci's, for both builds.

Memory: each build's peak RSS next to its RSS before the build; the full run also builds the
quick-size tree so the two peaks can be compared (a streamed build stays flat). Then one more
build of the uncompressed definition under cProfile (``--profile-gzip``: of the gzip one): top
functions by own time and a breakdown. cProfile sees the main thread only: gzip runs in its own
thread, so its cost shows as the main thread waiting to hand it work.

    .venv/bin/python bench/bench_build.py [--quick] [--files N] [--mb N] [--repeat N] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    CACHE,
    ORIGIN,
    header,
    machine_info,
    print_table,
    print_targets,
    scratch_dir,
    target,
    top_functions,
    write_json,
)

DEFINITION = "base: scratch\nlayers:\n  - source: data\n    destination: /data\n"
DEFINITIONS = {"image.yaml": DEFINITION, "plain.yaml": DEFINITION + "compression: none\n"}
"""The gzip build (the default) and the uncompressed one, committed together."""
GZIP, PLAIN = "image.yaml", "plain.yaml"
COMMIT_DATE = "2026-01-01T00:00:00+00:00"
FULL = (20_000, 200)
QUICK = (2_000, 20)


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
        GIT_AUTHOR_DATE=COMMIT_DATE,
        GIT_COMMITTER_DATE=COMMIT_DATE,
    )
    return env


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=git_env(), check=True, capture_output=True)


# -- the tree ----------------------------------------------------------------------------------


def write_tree(
    data: Path, files: int, total_bytes: int, seed: int = 7, compressible: float = 0.5
) -> int:
    """Write ``files`` files of about ``total_bytes`` in all under ``data``; return the bytes."""
    rnd = random.Random(seed)
    words = [
        "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 10)))
        for _ in range(2000)
    ]
    corpus = " ".join(rnd.choices(words, k=400_000)).encode()  # ~2.6 MB of "text"
    raw = [rnd.expovariate(1.0) for _ in range(files)]
    scale = total_bytes / sum(raw)
    sizes = [max(0, int(r * scale)) for r in raw]
    written = 0
    per_dir = 100
    for i, size in enumerate(sizes):
        folder = data / f"d{i // (per_dir * 20):03d}" / f"s{(i // per_dir) % 20:02d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        if rnd.random() < compressible:
            chunks, left = [], size
            while left > 0:
                start = rnd.randrange(0, len(corpus) - 65536)
                n = min(left, rnd.randint(4096, 65536))
                chunks.append(corpus[start : start + n])
                left -= n
            content = b"".join(chunks)
            suffix = ".txt"
        else:
            content = rnd.randbytes(size)
            suffix = ".bin"
        (folder / f"f{i:05d}{suffix}").write_bytes(content)
        written += len(content)
    return written


def prepare_repo(
    files: int, mb: int, rebuild: bool, *, compressible: float = 0.5, label: str = "build-tree"
) -> tuple[Path, int]:
    """The cached repository (generated and committed on first use) and its tree's size."""
    repo = CACHE / f"{label}-{files}-{mb}"
    marker = repo / ".bench-ready"
    if rebuild and repo.exists():
        shutil.rmtree(repo)
    if not marker.exists():
        if repo.exists():
            shutil.rmtree(repo)
        repo.mkdir(parents=True)
        print(f"   generating {files:,} files, {mb} MB in {repo} ...", flush=True)
        t0 = time.perf_counter()
        size = write_tree(repo / "data", files, mb * 1_000_000, compressible=compressible)
        for name, text in DEFINITIONS.items():
            (repo / name).write_text(text)
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "add", "-A", "data", *DEFINITIONS)
        _git(repo, "commit", "-q", "-m", "bench tree")
        (repo / ".git" / "info" / "exclude").write_text(".bench-ready\n")
        marker.write_text(json.dumps({"bytes": size}))
        print(f"   generated and committed in {time.perf_counter() - t0:.1f} s", flush=True)
    missing = [name for name in DEFINITIONS if not (repo / name).exists()]
    if missing:  # a cache from before plain.yaml: amend to the commit a generation gives now
        for name in missing:
            (repo / name).write_text(DEFINITIONS[name])
        _git(repo, "add", *missing)
        _git(repo, "commit", "-q", "--amend", "--no-edit")
    return repo, int(json.loads(marker.read_text())["bytes"])


# -- the build, in a child process ---------------------------------------------------------------


def child_build(repo: Path, home: Path, definition: str, profile: bool) -> dict[str, Any]:
    """Runs in the child: init a home, time build() of ``definition``, report peaks (and a
    profile)."""
    import resource

    from _common import current_rss_mb, phase_peak_rss_mb, profile_call, reset_peak_rss

    from immutrail.artifacts.builder import build
    from immutrail.ledger.home import init_ledger

    ledger, _ = init_ledger(home, origin=ORIGIN)
    ledger.close()
    rss_before = current_rss_mb()
    reset_peak_rss()
    out: dict[str, Any] = {"rss_before_mb": rss_before}
    t0 = time.perf_counter()
    if profile:
        result, stats = profile_call(lambda: build(repo / definition, home, actor="bench"))
        elapsed = time.perf_counter() - t0
        out["top"] = top_functions(stats, elapsed, 12)
        out["parts"] = _parts(stats, elapsed)
    else:
        result = build(repo / definition, home, actor="bench")
        elapsed = time.perf_counter() - t0
    out.update(
        seconds=elapsed,
        build_peak_rss_mb=phase_peak_rss_mb(),
        process_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        digest=result.digest,
        definition=definition,
        layer_size=result.built[0].descriptor.size,
        layer_digest=result.built[0].descriptor.digest,
        layer_media_type=result.built[0].descriptor.media_type,
    )
    if not profile:
        # the same build again in this process, into another fresh home: what a long-lived
        # process (the API server) pays once the one-time imports are done
        again = home.with_name(home.name + "-again")
        ledger, _ = init_ledger(again, origin=ORIGIN)
        ledger.close()
        t1 = time.perf_counter()
        if build(repo / definition, again, actor="bench").digest != result.digest:
            raise RuntimeError("the second build gave another digest")
        out["warm_seconds"] = time.perf_counter() - t1
    return out


_BUILTINS = [
    (
        "waiting for the gzip thread (queue full, join)",
        ("<method 'acquire' of '_thread.lock' objects>",),
    ),
    ("gzip in the main thread (reading back, if any)", ("<method 'decompress' of",)),
    ("sha256 update (inputs, diff_id)", ("<method 'update' of '_hashlib.HASH' objects>",)),
    ("pipe/file reads (git cat-file --batch)", ("<method 'read' of '_io.", "readinto")),
    ("file writes (store blob)", ("<method 'write' of '_io.",)),
]


def _parts(stats: Any, total: float) -> list[dict[str, Any]]:
    out, covered = [], 0.0
    for label, needles in _BUILTINS:
        t = sum(
            tt
            for (filename, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items()
            if filename == "~" and any(n in name for n in needles)
        )
        covered += t
        out.append({"part": label, "seconds": t, "pct": 100 * t / total if total else 0.0})
    for label, suffix, func in (
        (
            "attach_build_attestations (SBOM + provenance), cumulative",
            "attestations.py",
            "attach_build_attestations",
        ),
        ("write_layer, cumulative", "artifacts/layers.py", "write_layer"),
        ("tar headers (layers._pack_header), cumulative", "artifacts/layers.py", "_pack_header"),
        ("merging the tree for the SBOM, cumulative", "artifacts/rootfs.py", "apply_written"),
        ("provenance statement, cumulative", "artifacts/provenance.py", "build_provenance"),
        ("listing the commit's files (git ls-tree), cumulative", "artifacts/sources.py", "_list"),
        ("planning the layer, cumulative", "artifacts/layerplan.py", "plan_layer"),
        (
            "import jsonschema (and its format checkers), cumulative",
            "jsonschema/__init__.py",
            "<module>",
        ),
    ):
        t = sum(
            ct
            for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items()
            if name == func and filename.endswith(suffix)
        )
        out.append({"part": label, "seconds": t, "pct": 100 * t / total if total else 0.0})
    return out


PYCACHE = CACHE / "pycache"


def child_env() -> dict[str, str]:
    """The children's environment: bytecode cached (under ``bench/results/cache/pycache``).

    An installed Python package runs from bytecode (pip compiles it at install; Python writes it
    on first import). With ``PYTHONDONTWRITEBYTECODE`` set (as in some sandboxes and CI jobs)
    and no bytecode beside the sources, every fresh process compiles each module it imports
    again: ~0.2 s of a first build goes to compiling jsonschema and its format checkers, a cost
    no real installation pays. The first (untimed) child writes the cache."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def run_child(repo: Path, definition: str, profile: bool = False) -> dict[str, Any]:
    with scratch_dir("build-home") as work:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(repo),
            str(work / "home"),
            definition,
            *(["--profile"] if profile else []),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=child_env())
        if done.returncode != 0:
            raise RuntimeError(f"build child failed:\n{done.stderr[-4000:]}")
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return report


# -- baselines -----------------------------------------------------------------------------------


def tar_sha256(repo: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        "set -o pipefail; tar c data | sha256sum >/dev/null",
        shell=True,
        executable="/bin/bash",
        cwd=repo,
        check=True,
    )
    return time.perf_counter() - t0


def tar_gzip_sha256(repo: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        "set -o pipefail; tar c data | gzip -6 | sha256sum >/dev/null",
        shell=True,
        executable="/bin/bash",
        cwd=repo,
        check=True,
    )
    return time.perf_counter() - t0


def umoci_repack(repo: Path) -> float | None:
    umoci = shutil.which("umoci")
    if umoci is None:
        return None
    with scratch_dir("umoci") as work:
        layout, bundle = work / "layout", work / "bundle"

        def run(*args: str) -> None:
            subprocess.run([umoci, *args], cwd=work, check=True, capture_output=True)

        run("init", "--layout", str(layout))
        run("new", "--image", f"{layout}:t")
        run("unpack", "--rootless", "--image", f"{layout}:t", str(bundle))
        subprocess.run(
            ["cp", "-a", str(repo / "data"), str(bundle / "rootfs" / "data")], check=True
        )
        t0 = time.perf_counter()
        run("repack", "--image", f"{layout}:t", str(bundle))
        return time.perf_counter() - t0


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="2,000 files, 20 MB")
    ap.add_argument("--files", type=int)
    ap.add_argument("--mb", type=int)
    ap.add_argument("--repeat", type=int, default=1, help="timed rounds; best is reported")
    ap.add_argument("--rebuild", action="store_true", help="regenerate the cached repository")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-gzip", action="store_true", help="profile the gzip build instead")
    ap.add_argument("--child", nargs=3, metavar=("REPO", "HOME", "DEF"), help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args, unknown = ap.parse_known_args(argv)  # run_all.py passes its extras to everyone
    if unknown:
        print(f"   ignoring arguments meant for other benchmarks: {unknown}")
    if args.child:
        repo_arg, home_arg, definition = args.child
        print(json.dumps(child_build(Path(repo_arg), Path(home_arg), definition, args.profile)))
        return 0

    files, mb = QUICK if args.quick else FULL
    files, mb = args.files or files, args.mb or mb
    header(
        "build",
        f"image build (uncompressed and gzip) of {files:,} files / {mb} MB vs tar|sha256sum, "
        "tar|gzip -6, umoci",
        args.quick,
    )
    info = machine_info()
    repo, size = prepare_repo(files, mb, args.rebuild)
    # warm the page cache for everybody: the work tree (tar, umoci) and the object store (build)
    tar_sha256(repo)
    subprocess.run(
        ["cat", *map(str, (repo / ".git" / "objects" / "pack").glob("*"))],
        stdout=subprocess.DEVNULL,
        check=False,
    )

    run_child(repo, PLAIN)  # untimed: writes the children's bytecode cache (see child_env)

    builds: dict[str, list[dict[str, Any]]] = {PLAIN: [], GZIP: []}
    tars, gzips, umocis, loads = [], [], [], []
    for _ in range(max(1, args.repeat)):
        loads.append(os.getloadavg()[0])
        for definition, runs in builds.items():
            runs.append(run_child(repo, definition))
        tars.append(tar_sha256(repo))
        gzips.append(tar_gzip_sha256(repo))
        u = umoci_repack(repo)
        if u is not None:
            umocis.append(u)
    best = {name: min(runs, key=lambda b: b["seconds"]) for name, runs in builds.items()}
    t_plain, t_gz = best[PLAIN]["seconds"], best[GZIP]["seconds"]
    w_plain = min(run["warm_seconds"] for run in builds[PLAIN])
    w_gz = min(run["warm_seconds"] for run in builds[GZIP])
    t_tar, t_gzip = min(tars), min(gzips)
    t_umoci = min(umocis) if umocis else float("nan")
    mbs = size / 1e6
    print_table(
        f"Build of {files:,} files, {mbs:.0f} MB (best of {max(1, args.repeat)}); layer "
        f"{best[PLAIN]['layer_size'] / 1e6:.1f} MB uncompressed, "
        f"{best[GZIP]['layer_size'] / 1e6:.1f} MB gzip",
        ("what", "seconds", "MB/s", "uncompressed build speed / this", "gzip build speed / this"),
        [
            ("immutrail build(), compression: none", t_plain, mbs / t_plain, 1.0, t_plain / t_gz),
            ("immutrail build(), gzip", t_gz, mbs / t_gz, t_gz / t_plain, 1.0),
            ("  none, again in the same process", w_plain, mbs / w_plain, w_plain / t_plain, "-"),
            ("  gzip, again in the same process", w_gz, mbs / w_gz, "-", w_gz / t_gz),
            ("tar c data | sha256sum", t_tar, mbs / t_tar, t_tar / t_plain, t_tar / t_gz),
            (
                "tar c data | gzip -6 | sha256sum",
                t_gzip,
                mbs / t_gzip,
                t_gzip / t_plain,
                t_gzip / t_gz,
            ),
            ("umoci repack", t_umoci, mbs / t_umoci, t_umoci / t_plain, t_umoci / t_gz),
        ],
    )

    memory = [(f"{name}, {files:,} files / {mbs:.0f} MB", best[name]) for name in builds]
    if not args.quick and (files, mb) != QUICK:
        small_repo, small_size = prepare_repo(*QUICK, args.rebuild)
        for name in builds:
            small = run_child(small_repo, name)
            memory.append((f"{name}, {QUICK[0]:,} files / {small_size / 1e6:.0f} MB", small))
    print_table(
        "Build memory (child process; VmHWM reset before build())",
        ("build", "build s", "RSS before MB", "build peak RSS MB", "process peak MB"),
        [
            (n, m["seconds"], m["rss_before_mb"], m["build_peak_rss_mb"], m["process_peak_rss_mb"])
            for n, m in memory
        ],
    )

    profile: dict[str, Any] | None = None
    if not args.no_profile:
        profiled = GZIP if args.profile_gzip else PLAIN
        profile = run_child(repo, profiled, profile=True)
        print_table(
            f"Profiled build of {profiled} ({profile['seconds']:.1f} s under cProfile) - "
            "where time goes",
            ("part", "seconds", "% of total"),
            [(p["part"], p["seconds"], p["pct"]) for p in profile["parts"]],
        )
        print_table(
            "Top functions by own time (cProfile)",
            ("function", "calls", "own s", "% of total"),
            [(t["function"], t["calls"], t["tottime_s"], t["own_pct"]) for t in profile["top"]],
        )

    ratio = t_tar / t_plain
    targets = [target("uncompressed build throughput / tar c | sha256sum", ratio, 0.5)]
    print_targets(targets)
    print(
        f"\n   gzip build: / tar c | sha256sum {t_tar / t_gz:.3f}; / tar c | gzip -6 | sha256sum "
        f"(the fair floor, no target) {t_gzip / t_gz:.3f}; / umoci repack {t_umoci / t_gz:.3f}. "
        f"Uncompressed build / umoci repack {t_umoci / t_plain:.3f}. Again in the same process "
        f"(one-time imports done): uncompressed / tar c | sha256sum {t_tar / w_plain:.3f}, gzip "
        f"/ tar c | gzip -6 | sha256sum {t_gzip / w_gz:.3f}. Load average at each round's "
        f"start {loads}, at end {os.getloadavg()}"
    )
    write_json(
        "build",
        {
            "machine": info,
            "loadavg_at_rounds": loads,
            "loadavg_at_end": os.getloadavg(),
            "quick": args.quick,
            "files": files,
            "tree_bytes": size,
            "build_runs": builds,
            "tar_sha256_seconds": tars,
            "tar_gzip6_sha256_seconds": gzips,
            "umoci_repack_seconds": umocis,
            "ratio_tar": ratio,
            "warm_seconds": {PLAIN: w_plain, GZIP: w_gz},
            "ratio_tar_warm": t_tar / w_plain,
            "ratio_tar_gzip6_warm": t_gzip / w_gz,
            "ratio_tar_gzip_build": t_tar / t_gz,
            "ratio_tar_gzip6": t_gzip / t_gz,
            "ratio_umoci": t_umoci / t_plain if umocis else None,
            "ratio_umoci_gzip_build": t_umoci / t_gz if umocis else None,
            "memory": dict(memory),
            "profile": profile,
            "targets": targets,
            # the build runs in children: report their peak, not this parent's
            "process_peak_rss_mb": max(m["process_peak_rss_mb"] for _, m in memory),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
