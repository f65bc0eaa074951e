"""Shared helpers for the benchmarks: machine facts, realistic events, timing, tables, JSON.

Nothing here is timed itself. Every benchmark prints a table and writes
``bench/results/<name>.json``; ``bench/run_all.py`` runs them all.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "work"  # scratch databases, deleted after each benchmark
CACHE = RESULTS / "cache"  # big ledgers kept between runs, keyed by size
PG_URL_ENV = "IMMUTRAIL_TEST_PG_URL"
ORIGIN = "bench.immutrail.local/ledger"


# -- machine -----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(pg_url: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "mem_total_mb": _mem_total_mb(),
        "loadavg_at_start": os.getloadavg(),
        "git": _git_state(),
    }
    if pg_url:
        info["postgresql"] = pg_server_version(pg_url)
    return info


def _git_state() -> str:
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in src/" if dirty else "")


def _mem_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


# -- memory ------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so a phase's own peak can be read; Linux only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def phase_peak_rss_mb() -> float:
    """Peak RSS since the last reset_peak_rss() (VmHWM), else the process peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return process_peak_rss_mb()


def process_peak_rss_mb() -> float:
    """resource.getrusage peak RSS of this process (kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- events ------------------------------------------------------------------------------------

_TYPES = (
    "artifact.built",
    "artifact.signed",
    "image.pushed",
    "image.scanned",
    "deploy.started",
    "deploy.finished",
    "policy.evaluated",
)
_ACTORS = tuple(f"ci@github.com/acme/service-{i}" for i in range(40)) + tuple(
    f"spiffe://acme.internal/ns/build/sa/agent-{i}" for i in range(10)
)


def event_specs(count: int, seed: int = 1) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(type, actor, subject, payload) of realistic CI/CD events, about 340 canonical bytes."""
    rnd = random.Random(seed)
    hexd = "0123456789abcdef"
    for n in range(count):
        event_type = _TYPES[n % len(_TYPES)]
        actor = rnd.choice(_ACTORS)
        digest = "".join(rnd.choices(hexd, k=64))
        payload: dict[str, Any] = {
            "repo": f"github.com/acme/service-{rnd.randrange(200)}",
            "commit": "".join(rnd.choices(hexd, k=40)),
            "run": rnd.randrange(1, 10_000_000),
            "ok": rnd.random() > 0.05,
        }
        if n % 3 == 0:
            payload["tags"] = [f"v{rnd.randrange(10)}.{rnd.randrange(50)}.{rnd.randrange(20)}"]
        yield event_type, actor, f"sha256:{digest}", payload


def make_events(count: int, seed: int = 1) -> list[Any]:
    from immutrail.ledger.event import Event

    return [Event.create(t, a, s, p) for t, a, s, p in event_specs(count, seed)]


# -- timing and stats --------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p90_ms": pct(ms, 0.90),
        "p99_ms": pct(ms, 0.99),
        "mean_ms": statistics.fmean(ms),
        "max_ms": max(ms),
    }


def fmt_num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[fmt_num(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    print(f"\n{title}")
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    sys.stdout.flush()


def target(
    name: str, value: float, goal: float, *, higher_is_better: bool = True, unit: str = ""
) -> dict[str, Any]:
    met = value >= goal if higher_is_better else value <= goal
    return {
        "target": name,
        "value": value,
        "goal": goal,
        "comparison": ">=" if higher_is_better else "<=",
        "unit": unit,
        "met": met,
    }


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    rows = [
        (
            t["target"],
            t["value"],
            f"{t['comparison']} {fmt_num(t['goal'])} {t['unit']}".strip(),
            "MET" if t["met"] else "NOT MET",
        )
        for t in targets
    ]
    print_table("Targets", ("target", "measured", "goal", "status"), rows)


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data.setdefault("process_peak_rss_mb", process_peak_rss_mb())
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nresults written to {path.relative_to(ROOT)}")
    return path


# -- scratch space and databases ---------------------------------------------------------------


@contextmanager
def scratch_dir(label: str) -> Iterator[Path]:
    path = WORK / f"{label}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A raw connection with the ledger's pragmas (WAL, synchronous=FULL), autocommit mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def pg_url() -> str | None:
    return os.environ.get(PG_URL_ENV) or None


def pg_server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"


@contextmanager
def pg_database(base_url: str, label: str) -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"bench_{label}_{uuid.uuid4().hex[:10]}"
    ident = sql.Identifier(name)
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield urlunsplit(urlsplit(base_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def pg_notice() -> None:
    print(
        f"\nPostgreSQL: skipped ({PG_URL_ENV} is unset). Run under a throw-away server with\n"
        "  scripts/with-postgres.sh .venv/bin/python bench/<benchmark>.py"
    )


def new_ledger(home: Path, db: str) -> Any:
    from immutrail.ledger.home import init_ledger

    ledger, _ = init_ledger(home, db, origin=ORIGIN)
    return ledger


def header(name: str, what: str, quick: bool) -> None:
    print(f"== {name}{' (--quick)' if quick else ''}: {what}")
    print(
        f"   {cpu_model()}, {machine_info()['nproc']} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    sys.stdout.flush()


# -- profiling ---------------------------------------------------------------------------------


def profile_call(fn: Callable[[], Any]) -> tuple[Any, Any]:
    """Run fn under cProfile; return (result, pstats.Stats)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        out = fn()
    finally:
        prof.disable()
    return out, pstats.Stats(prof)


def _short(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    parts = Path(filename).parts
    if "immutrail" in parts:
        rel = "/".join(parts[len(parts) - 1 - parts[::-1].index("immutrail") :])
    else:
        rel = "/".join(parts[-2:])
    return f"{rel}:{line}({func})"


def top_functions(stats: Any, total: float, n: int = 15) -> list[dict[str, Any]]:
    """The n functions with the most own time (tottime), with share of ``total``."""
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [
        {
            "function": _short(key),
            "calls": nc,
            "tottime_s": tt,
            "cumtime_s": ct,
            "own_pct": 100 * tt / total if total else 0.0,
        }
        for key, (cc, nc, tt, ct, callers) in rows
    ]


def cumtime_of(stats: Any, file_suffix: str, func: str) -> float:
    """Cumulative time of every function named ``func`` in a file ending with ``file_suffix``."""
    return sum(
        ct
        for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items()
        if name == func and filename.replace("\\", "/").endswith(file_suffix)
    )


def components(
    stats: Any, total: float, parts: Sequence[tuple[str, Sequence[tuple[str, str]]]]
) -> list[dict[str, Any]]:
    """Share of ``total`` taken by each named part (sum of cumtimes of its functions); the rest
    is reported as "other". Parts must not call each other, or their times overlap."""
    out = []
    covered = 0.0
    for label, funcs in parts:
        t = sum(cumtime_of(stats, f, n) for f, n in funcs)
        covered += t
        out.append({"part": label, "seconds": t, "pct": 100 * t / total if total else 0.0})
    rest = total - covered
    out.append(
        {
            "part": "other (loops, objects, glue)",
            "seconds": rest,
            "pct": 100 * rest / total if total else 0.0,
        }
    )
    return out


def print_profile(
    title: str, comps: Sequence[dict[str, Any]], top: Sequence[dict[str, Any]]
) -> None:
    print_table(
        title + " - by component (cumulative time, cProfile)",
        ("component", "seconds", "% of total"),
        [(c["part"], c["seconds"], c["pct"]) for c in comps],
    )
    print_table(
        title + " - top functions by own time (cProfile)",
        ("function", "calls", "own s", "% of total"),
        [(t["function"], t["calls"], t["tottime_s"], t["own_pct"]) for t in top],
    )
