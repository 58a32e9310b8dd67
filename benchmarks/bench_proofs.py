"""Time the proofs for the whole zoo, cold, in a fresh process: stability conditions of every
design's frozen closed loop (learning rates, EMA coefficients and eps symbolic, together with the
curvature h and the frozen preconditioner r; weight decay, dampening and the like at their
defaults), a Lyapunov
certificate where the loop has at most 3 states, and the validity of every moment filter.

Run:  python benchmarks/bench_proofs.py   (prints one line per design and the total)
"""

from __future__ import annotations

import subprocess
import sys
import time

CHILD = r"""
import time
t0, c0 = time.perf_counter(), time.process_time()
import ctopt
from ctopt.analysis.loops import closed_loop
from ctopt.analysis.certificates import MAX_SYMBOLIC_STATES, lyapunov
from ctopt.analysis.stability import stability_conditions
from ctopt.analysis.validity import filter_validity
t_import = time.perf_counter() - t0
rows = []
for name in ctopt.zoo.names():
    t = time.perf_counter()
    design = ctopt.zoo.get(name)
    # learning rates and EMA coefficients stay symbolic; the others take their defaults
    fixed = {h.name: h.default for h in design.hyper if h.role is None}
    loop = closed_loop(design, **fixed)
    cond = stability_conditions(loop)
    t_cond = time.perf_counter() - t
    if len(loop.state_names) <= MAX_SYMBOLIC_STATES:
        cert = lyapunov(loop, samples=500)
        cert_note = "proven" if cert.proven else "P>0 sampled"
    else:
        cert_note = f"{len(loop.state_names)} states: no symbolic certificate"
    t_cert = time.perf_counter() - t - t_cond
    valid = filter_validity(design)
    t_all = time.perf_counter() - t
    rows.append((name, len(loop.state_names), len(cond.atoms), cert_note, valid.ok,
                 t_cond, t_cert, t_all - t_cond - t_cert, t_all))
total, cpu = time.perf_counter() - t0, time.process_time() - c0
print(f"{'design':12s} {'states':>6s} {'conds':>5s} {'certificate':38s} {'valid':>5s} "
      f"{'cond s':>7s} {'cert s':>7s} {'valid s':>7s} {'total s':>7s}")
for r in rows:
    print(f"{r[0]:12s} {r[1]:6d} {r[2]:5d} {r[3]:38s} {str(r[4]):>5s} "
          f"{r[5]:7.3f} {r[6]:7.3f} {r[7]:7.3f} {r[8]:7.3f}")
print(f"imports {t_import:.2f} s; whole zoo cold (imports included) {total:.2f} s wall, "
      f"{cpu:.2f} s CPU (the CPU figure is what an idle machine would show)")
"""


def main() -> None:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=False)
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    print(f"fresh process wall time {time.perf_counter() - start:.2f} s (budget 5 s)")


if __name__ == "__main__":
    main()
