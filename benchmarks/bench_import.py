"""Cold import time of ``import ctopt`` (fresh interpreters), and proof that it stays light.

Run: ``.venv/bin/python benchmarks/bench_import.py``. Goal: <= 1.5 s cold.
"""

import statistics
import subprocess
import sys

PROBE = (
    "import time, sys; t = time.perf_counter(); import ctopt; dt = time.perf_counter() - t; "
    "heavy = [m for m in ('torch', 'control', 'cvxpy', 'matplotlib') if m in sys.modules]; "
    "print(dt, ','.join(heavy))"
)


def main(runs: int = 5) -> None:
    times, heavy = [], set()
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
        dt, mods = out.stdout.split()[0], out.stdout.split()[1:] if len(out.stdout.split()) > 1 else []
        times.append(float(dt))
        heavy.update(m for m in ",".join(mods).split(",") if m)
    print(f"import ctopt: median {statistics.median(times):.3f} s, min {min(times):.3f} s "
          f"over {runs} fresh interpreters (goal <= 1.5 s)")
    print("heavy modules imported eagerly:", sorted(heavy) or "none")


if __name__ == "__main__":
    main()
