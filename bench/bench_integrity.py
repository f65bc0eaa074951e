"""(drift) Filesystem integrity of an unpacked root, against ``sha256sum`` in the same run.

A synthetic image of 20,000 files / 200 MB (two layers, 200 folders, file sizes from 200 B to
1 MiB, content half random and half repetitive) is written through the store API with the
project's deterministic layer writer, committed to a real store, and unpacked read-only with
``unpack_image``, as the local runtime does. Then, on the same files:

* ``expected_files``: the tree from the layers (cold: read, decompress, hash both layers) and
  from its sealed cache;
* ``check_root`` first check (no state: every file hashed) and second check (a state from the
  first: only a 1 % random sample, at least 32 files, is hashed; every other file is trusted
  on its unchanged (dev, inode, size, mtime, ctime));
* baseline: ``find ROOT -type f -print0 | xargs -0 sha256sum`` (coreutils, one process), and
  for reference the same with ``xargs -P <nproc>``.

The page cache is warm for all of them (each is run 3 times after one untimed ``sha256sum``
pass; the median is reported): this compares hashing and walking, not the disk.
Targets: first check at >= 0.7 x sha256sum's speed; second check faster than the first.

    .venv/bin/python bench/bench_integrity.py [--quick]     # --quick: 2,000 files / 20 MB
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from _common import (
    header,
    machine_info,
    print_table,
    print_targets,
    scratch_dir,
    target,
    write_json,
)

from immutrail.artifacts import oci
from immutrail.artifacts.layers import Entry, Kind, write_layer
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import make_writable, unpack_image
from immutrail.drift import check_root, drift_key, expected_files

NAME = "integrity"
RUNS = 3
SIZES = (200, 1_000, 4_000, 8_000, 16_000, 64_000, 256_000, 1_048_576)
WEIGHTS = (20, 25, 20, 15, 10, 6, 3, 1)


def file_sizes(count: int, total: int, rnd: random.Random) -> list[int]:
    """``count`` sizes drawn from a small-file-heavy mix, scaled to add up to ``total``."""
    drawn = rnd.choices(SIZES, WEIGHTS, k=count)
    scale = total / sum(drawn)
    sizes = [max(1, int(size * scale)) for size in drawn]
    sizes[-1] += total - sum(sizes)
    return sizes


def content(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    half = size // 2
    pattern = f"line {seed} of a file that compresses\n".encode()
    repeated = (pattern * (half // len(pattern) + 1))[:half]
    return rnd.randbytes(size - half) + repeated


def entries(first: int, sizes: list[int]) -> list[Entry]:
    out = []
    for offset, size in enumerate(sizes):
        n = first + offset
        path = f"usr/lib/pkg{n % 200:03d}/mod{n % 7}/file{n:05d}.dat"

        def opener(size: int = size, n: int = n) -> contextlib.AbstractContextManager[BinaryIO]:
            return contextlib.nullcontext(io.BytesIO(content(size, n)))

        out.append(Entry(path, Kind.FILE, 0o755 if n % 10 == 0 else 0o644, size=size, open=opener))
    return out


def make_image(store: Store, files: int, total: int) -> str:
    """Two layers of ``files // 2`` files each, stored with a config and a manifest."""
    sizes = file_sizes(files, total, random.Random(11))
    half = files // 2
    with store.stage() as stage:
        layers, diff_ids = [], []
        for first, part in ((0, sizes[:half]), (half, sizes[half:])):
            with stage.writer() as sink:
                result = write_layer(entries(first, part), sink, mtime=1_700_000_000)
            layers.append(oci.Descriptor(oci.LAYER_GZIP, sink.digest, sink.size))
            diff_ids.append(result.diff_id)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_descriptor = stage.put(oci.encode(config), oci.CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": config_descriptor.to_dict(),
            "layers": [layer.to_dict() for layer in layers],
        }
        descriptor = stage.put(oci.encode(manifest), oci.MANIFEST)
        store.commit(stage, descriptor, "bench-integrity:1")
    return descriptor.digest


def timed_runs(fn: Callable[[], Any], runs: int = RUNS) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def sha256sum(root: Path, parallel: int = 1) -> None:
    jobs = f"-P {parallel} -n 2000" if parallel > 1 else ""
    command = f"find {shlex.quote(str(root))} -type f -print0 | xargs -0 {jobs} sha256sum"
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def unpacked(store: Store, digest: str, folder: Path) -> Iterator[Path]:
    root = unpack_image(store, digest, folder)
    try:
        yield root
    finally:
        make_writable(root)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    files = 2_000 if args.quick else 20_000
    total = 20_000_000 if args.quick else 200_000_000
    nproc = len(os.sched_getaffinity(0))
    header(NAME, f"check_root over {files:,} files / {total / 1e6:.0f} MB", args.quick)
    machine = machine_info()  # its load average is the one at the start
    with scratch_dir(NAME) as work:
        store = Store.open(work / "store", create=True)
        started = time.perf_counter()
        digest = make_image(store, files, total)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        with unpacked(store, digest, work / "rootfs") as root:
            unpack_s = time.perf_counter() - started

            started = time.perf_counter()
            expected = expected_files(store, digest, use_cache=False)
            tree_cold_s = time.perf_counter() - started
            tree_cached, cached = timed_runs(lambda: expected_files(store, digest))
            assert cached.source == "cache" and cached.digest == expected.digest
            key = drift_key(store)

            sha256sum(root)  # warms the page cache for everyone
            sums, _ = timed_runs(lambda: sha256sum(root))
            sums_parallel, _ = timed_runs(lambda: sha256sum(root, nproc))

            states = iter(range(1_000))

            def first_check() -> Any:
                state = work / "state" / f"{next(states)}.json"  # a new state: a first check
                return check_root(expected, root, state=state, seal_key=key)

            firsts, first = timed_runs(first_check)
            assert first.clean and first.full and first.files_hashed == files
            state = work / "state" / "warm.json"
            check_root(expected, root, state=state, seal_key=key)
            seconds, second = timed_runs(
                lambda: check_root(expected, root, state=state, seal_key=key)
            )
            assert second.clean and not second.full
    first_s, second_s = statistics.median(firsts), statistics.median(seconds)
    sum_s, sum_par_s = statistics.median(sums), statistics.median(sums_parallel)
    mb = total / 1e6
    rows = [
        ("sha256sum (xargs, one process)", sum_s, mb / sum_s, 1.0),
        (f"sha256sum (xargs -P {nproc})", sum_par_s, mb / sum_par_s, sum_s / sum_par_s),
        ("check_root, first check (all hashed)", first_s, mb / first_s, sum_s / first_s),
        ("check_root, second check (state)", second_s, mb / second_s, sum_s / second_s),
        ("expected_files from the layers", tree_cold_s, mb / tree_cold_s, sum_s / tree_cold_s),
        ("expected_files from the sealed cache", statistics.median(tree_cached), None, None),
    ]
    print_table(
        "results (median of 3, warm page cache)",
        ("phase", "seconds", "MB/s", "x sha256sum speed"),
        [
            (name, s, rate if rate else "-", ratio if ratio else "-")
            for name, s, rate, ratio in rows
        ],
    )
    print(
        f"image built in {build_s:.1f}s, unpacked in {unpack_s:.1f}s; second check hashed "
        f"{second.files_hashed} files ({second.bytes_hashed:,} bytes), trusted "
        f"{second.files_trusted}"
    )
    targets = [
        target("first check speed / sha256sum speed", sum_s / first_s, 0.7, unit="x"),
        target(
            "second check time / first check time",
            second_s / first_s,
            1.0,
            higher_is_better=False,
            unit="x",
        ),
    ]
    print_targets(targets)
    write_json(
        NAME,
        {
            "machine": machine,
            "loadavg_at_end": os.getloadavg(),
            "quick": args.quick,
            "files": files,
            "content_bytes": total,
            "entries": len(expected),
            "seconds": {
                "build_image": build_s,
                "unpack": unpack_s,
                "expected_files_from_layers": tree_cold_s,
                "expected_files_from_cache": tree_cached,
                "sha256sum": sums,
                "sha256sum_parallel": sums_parallel,
                "check_first": firsts,
                "check_second": seconds,
            },
            "median_seconds": {
                "sha256sum": sum_s,
                "sha256sum_parallel": sum_par_s,
                "check_first": first_s,
                "check_second": second_s,
            },
            "first_check_speed_vs_sha256sum": sum_s / first_s,
            "second_check_time_vs_first": second_s / first_s,
            "second_check": {
                "files_hashed": second.files_hashed,
                "bytes_hashed": second.bytes_hashed,
                "files_trusted": second.files_trusted,
            },
            "parallel_processes": nproc,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
