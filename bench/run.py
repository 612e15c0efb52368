"""`make bench`: prints every benchmark figure with its goal. Needs the services from scripts/services.sh."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GOALS = {
    "engine_5_step_run_p50_ms": "≤ 0.3 ms",
    "import_function_app_ms": "≤ 250 ms",
    "credential_warm_lookup_us": "≤ 20 µs",
    "postgres_ledger_writes_per_s": "≥ 20,000/s",
    "postgres_month_summary_1m_rows_ms": "≤ 200 ms",
    "gateway_sqlite_c1_added_p50_ms": "≤ 1.5 ms",
    "gateway_sqlite_c1_serve_cpu_ms_per_request": "≤ 1.5 ms",
    "gateway_postgres_c1_added_p50_ms": "≤ 1.5 ms",
    "gateway_postgres_c1_serve_cpu_ms_per_request": "≤ 1.5 ms",
}
# make bench runs this with the services of scripts/services.sh up (see Makefile)


def import_time_ms(module: str = "function_app", repeats: int = 5) -> float:
    """Wall time of `python -c "import function_app"` (best of `repeats`, minus bare interpreter start)."""

    def best(code: str) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
            times.append(time.perf_counter() - started)
        return min(times) * 1000

    return round(best(f"import {module}") - best("pass"), 1)


def main() -> int:
    figures: dict[str, object] = {}
    figures.update(importlib.import_module("bench.engine_bench").run())
    figures["import_function_app_ms"] = import_time_ms()
    for name in ("credentials_bench", "storage_bench", "functions_bench", "model_transport_bench", "launch_bench",
                 "http_load", "gateway_load"):
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        figures.update(module.run())
        print(f"# {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        goal = GOALS.get(key, "")
        print(f"{key:<{width}}  {value}  {('goal ' + goal) if goal else ''}")
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
