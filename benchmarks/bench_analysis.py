"""Cold cost of the symbolic analyses: transfer functions of the whole zoo, then closed loops.

Each measurement runs in a fresh Python process (so sympy's caches and imports are cold) and
counts everything from ``import ctopt`` on. Target: every zoo transfer function in <= 2 s cold.

    python benchmarks/bench_analysis.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_CHILD = r"""
import json, time
t0 = time.perf_counter()
import ctopt
from ctopt.analysis.transfer import transfer_functions
t_import = time.perf_counter() - t0
designs = [ctopt.zoo.get(name) for name in ctopt.zoo.names()]
t_zoo = time.perf_counter() - t0
count = 0
for d in designs:
    count += len(transfer_functions(d))
t_tf = time.perf_counter() - t0
if WITH_LOOPS:
    from ctopt.analysis.loops import closed_loop
    for name in ctopt.zoo.names():
        closed_loop(ctopt.zoo.get(name)).charpoly()
t_all = time.perf_counter() - t0
print(json.dumps({"import": t_import, "zoo": t_zoo, "transfer": t_tf, "total": t_all,
                  "count": count}))
"""


def run(with_loops: bool) -> dict:
    code = _CHILD.replace("WITH_LOOPS", repr(with_loops))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tf_runs = [run(False) for _ in range(args.repeat)]
    loop_runs = [run(True) for _ in range(args.repeat)]
    med = statistics.median
    n = tf_runs[0]["count"]
    print(f"import ctopt (cold)                       : {med(r['import'] for r in tf_runs):.2f} s")
    print(f"build the 13 zoo designs                  : "
          f"{med(r['zoo'] - r['import'] for r in tf_runs):.2f} s")
    print(f"derive their {n} transfer functions         : "
          f"{med(r['transfer'] - r['zoo'] for r in tf_runs):.2f} s")
    print(f"all of the above, cold, one process       : "
          f"{med(r['transfer'] for r in tf_runs):.2f} s (target <= 2 s)")
    print(f"  + 13 frozen closed loops and charpolys  : "
          f"{med(r['total'] - r['transfer'] for r in loop_runs):.2f} s")
    print(f"(median of {args.repeat} fresh processes)")


if __name__ == "__main__":
    main()
