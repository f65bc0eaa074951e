"""Print the results in bench/results/*.json as Markdown tables (for BENCHMARKS.md).

.venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from _common import RESULTS, fmt_num


def md(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    out += ["| " + " | ".join(fmt_num(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def targets(data: dict[str, Any]) -> str:
    return md(
        ("target", "measured", "goal", "status"),
        [
            (
                t["target"],
                t["value"],
                f"{t['comparison']} {fmt_num(t['goal'])} {t['unit']}",
                "met" if t["met"] else "**not met**",
            )
            for t in data["targets"]
        ],
    )


def profile(p: dict[str, Any]) -> str:
    return (
        md(
            ("component (cProfile, cumulative)", "s", "% of total"),
            [(c["part"], c["seconds"], c["pct"]) for c in p["components"]],
        )
        + "\n\n"
        + md(
            ("function (cProfile, own time)", "calls", "own s", "% of total"),
            [
                (f"`{t['function']}`", t["calls"], t["tottime_s"], t["own_pct"])
                for t in p["top"][:10]
            ],
        )
    )


def append_report(d: dict[str, Any]) -> None:
    p = d["params"]
    ev = d["events"]
    print(
        f"### append ({p['events']:,} events, batches of {p['batch']:,}, best of "
        f"{p['repeat']}; {p['single']} single appends)\n"
    )
    print(
        f"Event.create: {ev['create_per_s']:,.0f}/s ({ev['create_us_each']:.1f} us each), "
        f"canonical entry {ev['entry_bytes_min']}-{ev['entry_bytes_max']} bytes "
        f"(mean {ev['entry_bytes_mean']:.0f}).\n"
    )
    for be in ("sqlite", "postgres"):
        if be not in d:
            continue
        b = d[be]["batched"]
        print(f"**{be}, batched**\n")
        print(
            md(
                ("what", "events/s", "us/event", "vs raw", "peak RSS MB", "RSS growth MB"),
                [
                    (
                        "raw insert of the same bytes (baseline)",
                        b["raw"]["per_s"],
                        b["raw"]["us_each"],
                        1.0,
                        b["raw"]["peak_rss_mb"],
                        b["raw"]["peak_rss_mb"] - b["raw"]["rss_before_mb"],
                    ),
                    (
                        "ledger schema, precomputed rows (floor)",
                        b["floor"]["per_s"],
                        b["floor"]["us_each"],
                        b["floor_ratio"],
                        b["floor"]["peak_rss_mb"],
                        b["floor"]["peak_rss_mb"] - b["floor"]["rss_before_mb"],
                    ),
                    (
                        "`Ledger.append_batch` (pre-built Events)",
                        b["ledger"]["per_s"],
                        b["ledger"]["us_each"],
                        b["ratio"],
                        b["ledger"]["peak_rss_mb"],
                        b["ledger"]["peak_rss_mb"] - b["ledger"]["rss_before_mb"],
                    ),
                ],
            )
        )
        sg = d[be]["single"]
        print(f"\n**{be}, single durable appends**\n")
        print(
            md(
                ("what", "appends/s", "median ms", "p90 ms", "p99 ms", "vs raw"),
                [
                    (
                        "raw single-row insert + commit",
                        sg["raw"]["per_s"],
                        sg["raw"]["median_ms"],
                        sg["raw"]["p90_ms"],
                        sg["raw"]["p99_ms"],
                        1.0,
                    ),
                    (
                        "`Ledger.append()`",
                        sg["ledger"]["per_s"],
                        sg["ledger"]["median_ms"],
                        sg["ledger"]["p90_ms"],
                        sg["ledger"]["p99_ms"],
                        sg["ratio"],
                    ),
                ],
            )
        )
        print(f"\n**{be}, profile of append_batch ({d[be]['profile']['events']:,} events)**\n")
        print(profile(d[be]["profile"]))
        print()
    print("**per-event cost of each step (unprofiled)**\n")
    print(
        md(
            ("step", "us/event", "events/s alone"),
            [
                (
                    "`Event.create()` (outside the append timing)",
                    ev["create_us_each"],
                    ev["create_per_s"],
                )
            ]
            + [(s["stage"], s["us_per_event"], 1e6 / s["us_per_event"]) for s in d["stages"]],
        )
    )
    if "sqlite_schema_breakdown" in d:
        raw = d["sqlite"]["batched"]["raw"]["per_s"]
        print("\n**sqlite schema breakdown (precomputed rows)**\n")
        print(
            md(
                ("variant", "rows/s", "us/row", "vs raw"),
                [
                    (b["variant"], b["per_s"], b["us_each"], b["per_s"] / raw)
                    for b in d["sqlite_schema_breakdown"]
                ],
            )
        )
    print("\n" + targets(d) + "\n")


def proofs_report(d: dict[str, Any]) -> None:
    for be in ("sqlite", "postgres"):
        if be not in d:
            continue
        r = d[be]
        build = d.get(f"{be}_build") or {}
        print(f"### proofs, {be}, {r['size']:,} entries\n")
        if build.get("append_seconds"):
            print(
                f"Build: Event.create {build['create_seconds']:.0f} s + append_batch "
                f"{build['append_seconds']:.0f} s ({build['append_per_s']:,.0f} events/s, "
                f"batches of {build['batch']:,}).\n"
            )
        base = r["point_lookup"]["median_ms"]
        rows = []
        for label, key in (
            ("point lookup of one entry row (baseline)", "point_lookup"),
            ("`inclusion_proof(index)`", "inclusion"),
            ("`consistency_proof(old, new)`", "consistency"),
        ):
            x = r[key]
            rows.append(
                (
                    label,
                    x["median_ms"],
                    x["p90_ms"],
                    x["p99_ms"],
                    x["max_ms"],
                    x["median_ms"] / base,
                )
            )
        print(md(("request", "median ms", "p90 ms", "p99 ms", "max ms", "x lookup"), rows))
        print()
        print(
            md(
                ("proof", "head() reads", "nodes() calls", "hashes fetched", "of them leaves"),
                [
                    (k, v["head_calls"], v["nodes_calls"], v["keys"], v["leaf_keys"])
                    for k, v in r["reads_per_proof"].items()
                ],
            )
        )
        print(f"\nPeak RSS while timing: {r['peak_rss_mb']:.0f} MB.\n")
    print(targets(d) + "\n")


def verify_report(d: dict[str, Any]) -> None:
    for be in ("sqlite", "postgres"):
        if be not in d:
            continue
        r = d[be]
        print(f"### verify, {be}, {r['entries']:,} entries ({r['entry_bytes'] / 1e6:.1f} MB)\n")
        rows = [
            (
                "sha256 per entry, in memory (baseline)",
                r["hash_per_entry_per_s"],
                r["hash_per_entry_mb_s"],
                1.0,
            ),
            (
                "sha256 over one buffer (context)",
                float("nan"),
                r["hash_single_buffer_mb_s"],
                float("nan"),
            ),
        ]
        if "read_and_hash_per_s" in r:
            rows.append(
                (
                    "read bytes from SQLite + sha256 each (context)",
                    r["read_and_hash_per_s"],
                    r["read_and_hash_per_s"] * r["entry_bytes"] / r["entries"] / 1e6,
                    r["read_and_hash_per_s"] / r["hash_per_entry_per_s"],
                )
            )
        rows.append(("`Ledger.verify()`", r["verify_per_s"], r["verify_mb_s"], r["ratio"]))
        print(md(("what", "entries/s", "MB/s", "vs baseline"), rows))
        print(f"\nPeak RSS during verify: {r['verify']['peak_rss_mb']:.0f} MB.\n")
        print(
            md(
                ("step (no profiler, all rows)", "s", "us/entry", "% of verify"),
                [
                    (
                        s["step"],
                        s["seconds"],
                        s["us_per_entry"],
                        100 * s["seconds"] / r["verify"]["seconds"],
                    )
                    for s in r["steps"]
                ],
            )
        )
        print()
        print(profile(r["profile"]))
        print()
    print(targets(d) + "\n")


def main() -> int:
    for name, fn in (
        ("ledger_append", append_report),
        ("ledger_proofs", proofs_report),
        ("ledger_verify", verify_report),
    ):
        data = load(name)
        if data is None:
            print(f"(no results for {name})\n")
            continue
        if data.get("quick"):
            print(f"(results for {name} are from a --quick run)\n")
        fn(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
