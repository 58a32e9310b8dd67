"""Step time, % of roofline, compile time and memory of exported optimizers vs torch's Adam.

One process, medians, ratios against torch measured in the same run. Run::

    python benchmarks/bench_step.py            # 1x10M, 200 mixed (10M), 1x64M float32
    python benchmarks/bench_step.py --quick    # 1x1M, 50 mixed (1M), 1x4M; fewer repetitions

Roofline: bytes a step must move (float32 Adam: read theta, g, m, v, write theta, m, v = 28 B per
element; a design with S states moves (3 + 2S) * 4 B) divided by the best bandwidth among simple
streaming kernels (copy, in-place add, in-place scale) measured here on the same footprint.
Numbers are never asserted anywhere; they are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import ctopt
from ctopt.export import flat_parameters


def shapes_mixed(total: int, count: int) -> list[tuple[int, ...]]:
    """A transformer-like mix: a few large matrices, many mid-size ones, small vectors."""
    shapes: list[tuple[int, ...]] = []
    d = 1
    while 12 * d * d * (count // 8) < total:
        d += 16
    d = max(d - 16, 16)
    while len(shapes) < count - 1:
        kind = len(shapes) % 8
        if kind in (0, 1, 2, 3):
            shapes.append((d, d))
        elif kind in (4, 5):
            shapes.append((d, 2 * d) if kind == 4 else (2 * d, d))
        else:
            shapes.append((d,))
    used = sum(int(torch.tensor(s).prod()) for s in shapes)
    shapes.append((max(total - used, 1),))
    return shapes


def make_params(shapes, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device) * 0.1) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen).to(device) * 0.01
    return ps


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, reps, device, warmup=2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stream_bandwidth(numel: int, reps: int, device: str) -> tuple[float, dict]:
    """Bandwidth of copy, in-place add and in-place scale on ``numel`` float32 elements.

    The kernels rotate over eight buffers (a footprint larger than Adam's seven streams), so a
    timed kernel finds its operands evicted by the previous ones, as the optimizer step does."""
    pool = [torch.randn(numel, device=device) for _ in range(8)]
    kernels = {
        "copy": (lambda a, b: a.copy_(b), 8),
        "add_": (lambda a, b: a.add_(b), 12),
        "scale_": (lambda a, b: a.mul_(1.0000001), 8),
    }
    times: dict = {name: [] for name in kernels}
    turn = 0
    for _ in range(max(reps, 2)):
        for name, (fn, _) in kernels.items():
            a, b = pool[turn % 8], pool[(turn + 1) % 8]
            turn += 2
            sync(device)
            t0 = time.perf_counter()
            fn(a, b)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    out = {name: kernels[name][1] * numel / statistics.median(times[name]) for name in kernels}
    return max(out.values()), out


def peak_rss_delta(fn) -> float | None:
    """Peak resident memory added while ``fn`` runs (Linux: reset VmHWM via clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status("VmRSS")
        fn()
        return _status("VmHWM") - base
    except OSError:
        return None


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return float(line.split()[1]) * 1024
    raise OSError(key)


def torch_variants():
    def make(kind):
        def build(ps):
            if kind == "compiled":
                opt = torch.optim.Adam(ps, lr=1e-3, foreach=True)
                step = torch.compile(opt.step)
                return opt, step
            opt = torch.optim.Adam(ps, lr=1e-3, foreach=kind == "foreach", fused=kind == "fused")
            return opt, opt.step
        return build
    return {f"torch {k}": make(k) for k in ("forloop", "foreach", "fused", "compiled")}


def ctopt_variant(name, backend, flat=False):
    cls = ctopt.to_torch(ctopt.zoo.get(name))

    def build(ps):
        if flat:
            grads = [p.grad.clone() for p in ps]
            flat_parameters(ps)
            for p, g in zip(ps, grads, strict=True):
                p.grad.copy_(g)
        opt = cls(ps, backend=backend)
        return opt, opt.step
    return build


class Variant:
    """One optimizer on its own copy of the parameters, timed step by step."""

    def __init__(self, label, build, shapes, device, bytes_per_elem):
        self.label, self.device, self.bytes = label, device, bytes_per_elem
        self.ps = make_params(shapes, device=device)
        self.numel = sum(p.numel() for p in self.ps)
        t0 = time.perf_counter()
        self.opt, self.step = build(self.ps)
        self.step()
        sync(device)
        self.first = time.perf_counter() - t0
        self.step()
        self.times: list[float] = []
        self.state = sum(v.numel() * v.element_size() for s in self.opt.state.values()
                         for k, v in s.items() if k != "step")
        self.transient = peak_rss_delta(self.step) if device == "cpu" else None

    def tick(self) -> None:
        t0 = time.perf_counter()
        self.step()
        sync(self.device)
        self.times.append(time.perf_counter() - t0)

    def finish(self) -> Variant:
        """Drop the tensors (keep the timings) to free memory."""
        del self.opt, self.step, self.ps
        return self

    def row(self) -> dict:
        t, bandwidth = statistics.median(self.times), self.bandwidth
        return dict(label=self.label, ms=t * 1e3, roof=self.bytes * self.numel / bandwidth / t,
                    first=self.first, state=self.state, transient=self.transient,
                    bandwidth=bandwidth)


def interleaved(variants: list[Variant], numel: int, reps: int, device: str) -> float:
    """Time every variant round-robin with the streaming kernels (so load changes hit all alike).
    Returns the roofline bandwidth of these rounds: the best kernel type by its median, and
    stores it on each variant."""
    samples: dict = {}
    for _ in range(reps):
        _, detail = stream_bandwidth(numel, 1, device)
        for name, value in detail.items():
            samples.setdefault(name, []).append(value)
        for v in variants:
            v.tick()
    bandwidth = max(statistics.median(values) for values in samples.values())
    for v in variants:
        v.bandwidth = bandwidth
    return bandwidth


def compile_times(shape_kind: str, numel: int, count: int) -> tuple[float, float]:
    """Cold and warm first-step overhead of the compiled path, each in a fresh process."""
    code = (
        "import time, torch, ctopt, sys\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "from bench_step import make_params, shapes_mixed\n"
        f"shapes = [({numel},)] if {shape_kind!r} == 'one' else shapes_mixed({numel}, {count})\n"
        "ps = make_params(shapes)\n"
        "opt = ctopt.to_torch(ctopt.zoo.get('adam'))(ps, backend='compiled')\n"
        "t0 = time.perf_counter(); opt.step(); first = time.perf_counter() - t0\n"
        "t0 = time.perf_counter(); opt.step(); second = time.perf_counter() - t0\n"
        "print(first - second)\n"
    )
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for _ in range(2):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
            out.append(float(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else
                       float("nan"))
    return out[0], out[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-torch-compile", action="store_true",
                        help="skip the torch.compile'd torch Adam (slow to compile)")
    parser.add_argument("--designs", default="all", help="'all' or comma-separated zoo names")
    parser.add_argument("--shapes", default="one,mixed,large",
                        help="which shapes: any of one, mixed, large (comma-separated)")
    parser.add_argument("--no-compile-times", action="store_true",
                        help="skip the cold/warm compile-time subprocesses")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is the most stable "
                             "on a shared machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
        # large buffers go straight to mmap and back on free, so peak RSS shows transients
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    scale = 10 if args.quick else 1
    big, huge, count = 10_000_000 // scale, 64_000_000 // (16 if args.quick else 1), \
        (50 if args.quick else 200)
    reps = 5 if args.quick else 15
    device = args.device
    print(f"# ctopt bench_step  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    shape_sets = {
        ("one", f"1x{big / 1e6:g}M"): [(big,)],
        ("mixed", f"{count} mixed ({big / 1e6:g}M)"): shapes_mixed(big, count),
        ("large", f"1x{huge / 1e6:g}M"): [(huge,)],
    }
    wanted = set(args.shapes.split(","))
    shape_sets = {name: v for (kind, name), v in shape_sets.items() if kind in wanted}
    designs = ctopt.zoo.names() if args.designs == "all" else args.designs.split(",")
    for shape_name, shapes in shape_sets.items():
        numel = sum(int(torch.tensor(s).prod()) for s in shapes)
        _, detail = stream_bandwidth(numel, reps, device)
        print(f"\n## {shape_name}: {numel:,} float32 elements; streaming bandwidth "
              + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in detail.items()) + " GB/s")
        builders = dict(torch_variants())
        if args.no_torch_compile:
            builders.pop("torch compiled")
        for backend in ("forloop", "foreach", "compiled"):
            builders[f"ctopt adam {backend}"] = ctopt_variant("adam", backend)
        if len(shapes) > 1:
            builders["ctopt adam compiled+flat"] = ctopt_variant("adam", "compiled", flat=True)
        if numel > 20_000_000:  # keep memory bounded: the slow eager paths are skipped
            for label in ("torch forloop", "ctopt adam forloop", "ctopt adam foreach"):
                builders.pop(label, None)
        variants = [Variant(label, build, shapes, device, 28) for label, build in builders.items()]
        bandwidth = interleaved(variants, numel, reps, device)
        done = [v.finish() for v in variants]
        del variants
        for name in designs:
            if name == "adam":
                continue
            d = ctopt.zoo.get(name)
            flat = len(shapes) > 1
            v = Variant(f"ctopt {name} compiled" + ("+flat" if flat else ""),
                        ctopt_variant(name, "compiled", flat=flat), shapes, device,
                        (3 + 2 * len(d.states)) * 4)
            interleaved([v], numel, max(reps // 2, 3), device)
            done.append(v.finish())
        rows = [v.row() for v in done]
        fused = next(r["ms"] for r in rows if r["label"] == "torch fused")
        print(f"roofline bandwidth (best kernel, median over the Adam rounds): "
              f"{bandwidth / 1e9:.1f} GB/s; each zoo design uses the median of its own rounds")
        print("| variant | step ms | vs torch fused | % roofline | GB/s roof | first step s | "
              "state MB | peak transient MB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            tr = "n/a" if r["transient"] is None else f"{r['transient'] / 1e6:.0f}"
            print(f"| {r['label']} | {r['ms']:.2f} | {r['ms'] / fused:.2f}x | {100 * r['roof']:.0f}"
                  f" % | {r['bandwidth'] / 1e9:.1f} | {r['first']:.1f} | {r['state'] / 1e6:.0f} | {tr} |")
    if device == "cpu" and not args.no_compile_times:
        print("\n## compile time of the compiled path (Adam; fresh process, fresh cache)")
        for kind, n in (("one", big), ("mixed", big)):
            cold, warm = compile_times(kind, n, count)
            print(f"- {'1 tensor' if kind == 'one' else f'{count} tensors'}: cold {cold:.1f} s, "
                  f"warm (cache) {warm:.1f} s")


if __name__ == "__main__":
    main()
