"""Step time, % of roofline, compile time and memory of exported optimizers vs torch's Adam, on
the parameter lists of real models (as their modules allocate them). Every table in one run::

    python benchmarks/bench_step.py --threads 1      # the full run (docs/performance.md)
    python benchmarks/bench_step.py --quick          # smaller models, fewer rounds (~2 min)
    python benchmarks/bench_step.py --lists transformer,mixed --designs adam,adan

Tables: (1) Adam on every model list: torch fused/foreach against ctopt ``backend="auto"`` (and
with its flat buffers on small pages, and the compiled path with the parameters kept as
allocated); (2) every zoo design, ``auto``, with its share of its own roofline and its ratio to
torch fused Adam in the same rounds; (3) peers
for designs torch lacks (adabelief-pytorch, pytorch-optimizer), when installed; (4) mixed
precision (bfloat16 parameters, GradScaler's ``grad_scale``/``found_inf``); (5) a whole training
iteration (zero_grad, forward, backward, step), which also pays what the flat layout costs in
the backward pass; (6) compile time, cold and warm, in fresh processes, for growing tensor
counts; (7) small models (an RL policy, an MNIST MLP, a narrow convnet), where ``auto`` runs the flat
layout with its eager kernel for the first ``AUTO_COMPILE_AFTER_STEPS`` steps and the compiled
kernel after them (and ``backend="foreach"``, the per-tensor path, beside them).

Roofline: the bytes a step must move at the best bandwidth the machine gives each kind of pass,
measured in the same rounds. A design with S states reads theta, g and the states and writes
theta and the states, (3 + 2S) x 4 B per float32 element, at the best bandwidth of copy,
in-place add and in-place scale; each of its R group reductions is a pass of its own that reads
g once, R x 4 B, at the best bandwidth of sum and dot (a read-only stream is slower on one
core). Each kernel runs on torch's own allocations and, where ctopt's flat buffers get them, on
transparent huge pages (``ctopt.export.pages``); the best of both counts. Table (2) also prints
the share of the cruder one-bandwidth roofline (every byte at the read-write bandwidth).
Memory: optimizer state counts the bytes of every state tensor; peak transient memory is the
growth of the process's peak resident set during one step (Linux ``VmHWM`` after ``clear_refs``,
with glibc made to map every block of 128 KB or more on its own and to unmap it when freed, so
that a freed temporary leaves the resident set; parameters and states are allocated so too).
Steps are timed with glibc's mmap threshold at 32 MB instead, where its dynamic threshold
settles in a running process: a step's temporaries then come from the heap, as in a training
loop, rather than being mapped and faulted in at every step (see ``measure.allocator``).
Ratios are interleaved: every variant of a table takes one step in turn, round after round, so
a load change hits all alike; medians. Nothing here is asserted anywhere.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import models  # noqa: E402
from measure import (  # noqa: E402
    LIST_TITLES,
    Variant,
    interleaved,
    load,
    mb,
    roof_bandwidths,
    sync,
    timing_allocator,
)

import ctopt  # noqa: E402
from ctopt.export import pages  # noqa: E402


# ------------------------------------------------------------------------------- variants
def torch_adam(kind: str, **extra):
    def build(ps):
        if kind == "compiled":
            opt = torch.optim.Adam(ps, lr=1e-3, foreach=True)
            return opt, torch.compile(opt.step)
        opt = torch.optim.Adam(ps, lr=1e-3, foreach=kind == "foreach", fused=kind == "fused")
        return opt, opt.step
    return build


def ctopt_opt(name: str, backend: str = "auto", flatten: bool = True, huge: bool = True,
              **values):
    """A ctopt optimizer; ``huge=False``: its flat buffers on torch's own (small) pages, as
    before ``ctopt.export.pages`` (they are made at the first step)."""
    cls = ctopt.to_torch(ctopt.zoo.get(name))

    def build(ps):
        opt = cls(ps, backend=backend, **values)
        opt.flatten_parameters = flatten
        if huge:
            return opt, opt.step

        def step():
            if opt.state:
                return opt.step()
            pages.HUGE_PAGES, before = False, pages.HUGE_PAGES
            try:
                return opt.step()
            finally:
                pages.HUGE_PAGES = before
        return opt, step
    return build


# --------------------------------------------------------------------------------- tables
def warm_kernel(design: str, device: str) -> None:
    """Compile (or load) a design's float32 kernel before timing, so that the first step of a
    variant shows the step's own memory, not the compiler's."""
    ps = [torch.nn.Parameter(torch.zeros(4, device=device))]
    ps[0].grad = torch.zeros(4, device=device)
    ctopt_opt(design, "compiled")(ps)[1]()


def adam_table(lists, args, number: int = 1) -> None:
    warm_kernel("adam", args.device)
    print(f"\n## ({number}) Adam on real parameter lists (float32), ctopt backend='auto'")
    print("| list | tensors | elements | variant | step ms | vs torch fused | % roofline | "
          "1st step s | state MB | state = S x params | peak transient MB | 1st-step peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in lists:
        builders = {"torch fused": torch_adam("fused"), "torch foreach": torch_adam("foreach"),
                    "ctopt adam auto": ctopt_opt("adam"),
                    "ctopt adam auto, small pages": ctopt_opt("adam", huge=False),
                    "ctopt adam compiled, as allocated": ctopt_opt("adam", "compiled", False)}
        if args.torch_compile:
            builders["torch compiled"] = torch_adam("compiled")
        if name == "gpt2" and not args.quick:  # memory: the foreach copy is left out
            builders.pop("torch foreach")
        if args.device != "cpu":  # pages are the host's: on a GPU both variants are one
            builders.pop("ctopt adam auto, small pages")
        variants = [Variant(label, b, name, args.quick, args.device, 28)
                    for label, b in builders.items()]
        bandwidth, _ = roof_bandwidths(
            interleaved(variants, args.reps, args.device, variants[0].numel))
        fused = variants[0].ms
        for v in variants:
            exact = "yes" if v.state == 2 * v.param_bytes else f"no ({v.state / v.param_bytes:g}x)"
            print(f"| {LIST_TITLES[name]} | {len(v.ps)} | {v.numel / 1e6:.2f}M | {v.label} | "
                  f"{v.ms:.2f} | {v.ms / fused:.2f}x | "
                  f"{100 * v.bytes * v.numel / bandwidth / (v.ms / 1e3):.0f} % | {v.first:.1f} | "
                  f"{mb(v.state)} | {exact} | {mb(v.transient)} | {mb(v.first_peak)} |")
        print(f"<!-- {name}: roofline bandwidth {bandwidth / 1e9:.1f} GB/s; {load()} -->")
        for v in variants:
            v.finish()


def zoo_table(lists, designs, args) -> None:
    print("\n## (2) every zoo design, backend='auto', on each list (own rounds with torch fused "
          "Adam)")
    print("| list | design | bytes/elem | step ms | vs torch fused Adam | % own roofline | "
          "% one-bandwidth roofline | fixed ms | % roofline within reach | state MB | "
          "state = S x params |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in lists:
        fused = Variant("torch fused", torch_adam("fused"), name, args.quick, args.device, 28)
        count = len(fused.ps)
        fused_fixed = Variant("torch fused", torch_adam("fused"), name, args.quick, args.device,
                              28, tiny=count)
        for design in designs:
            d = ctopt.zoo.get(design)
            update, reads = (3 + 2 * len(d.states)) * 4, len(d.reductions) * 4
            warm_kernel(design, args.device)
            v = Variant(design, ctopt_opt(design), name, args.quick, args.device,
                        update + reads)
            # the same path on as many one-element tensors: what the step costs besides moving
            # bytes (checks, coefficients, the call), the caches as cold as in the other rounds
            fixed = Variant(design, ctopt_opt(design, "compiled"), name, args.quick,
                            args.device, update + reads, tiny=count)
            for u in (fused, fused_fixed):
                u.times = []
            bandwidths = interleaved([fused, v, fused_fixed, fixed], max(args.reps // 2, 3),
                                     args.device, v.numel)
            rw, ro = roof_bandwidths(bandwidths)
            # a reduction is its own pass, which only reads: at the read-only bandwidth
            roof = v.numel * (update / rw + reads / ro)
            flat = v.numel * (update + reads) / rw
            exact = "yes" if v.state == len(d.states) * v.param_bytes else "no"
            print(f"| {LIST_TITLES[name]} | {design} | {update + reads} | {v.ms:.2f} | "
                  f"{v.ms / fused.ms:.2f}x | {100 * roof / (v.ms / 1e3):.0f} % | "
                  f"{100 * flat / (v.ms / 1e3):.0f} % | {fixed.ms:.2f} | "
                  f"{100 * roof / (roof + fixed.ms / 1e3):.0f} % | {mb(v.state)} | {exact} |")
            v.finish()
            fixed.finish()
        print(f"<!-- {name}: torch fused Adam {fused.ms:.2f} ms, "
              f"{100 * v.numel * 28 / rw / (fused.ms / 1e3):.0f} % of Adam's roofline, fixed "
              f"{fused_fixed.ms:.2f} ms on {count} one-element tensors; streaming GB/s in the "
              f"last rounds: " + ", ".join(f"{k} {b / 1e9:.1f}" for k, b in bandwidths.items()) +
              f"; {load()} -->")
        fused.finish()
        fused_fixed.finish()


def peer_builders():
    """Peers for designs torch lacks: (label, ctopt design, builder) or (label, reason)."""
    out = []
    try:
        from adabelief_pytorch import AdaBelief

        def adabelief(ps):
            opt = AdaBelief(ps, lr=1e-3, eps=1e-16, weight_decouple=False, rectify=False,
                            print_change_log=False)
            return opt, opt.step
        out.append(("adabelief-pytorch AdaBelief", "adabelief", adabelief))
    except ImportError as error:
        out.append(("adabelief-pytorch AdaBelief", f"not installed ({error})"))
    try:
        import pytorch_optimizer as po

        for cls, design in ((po.Adan, "adan"), (po.AdaBelief, "adabelief")):
            def build(ps, cls=cls):
                opt = cls(ps, lr=1e-3)
                return opt, opt.step
            out.append((f"pytorch-optimizer {cls.__name__}", design, build))
    except ImportError as error:
        for label in ("Adan", "AdaBelief"):
            out.append((f"pytorch-optimizer {label}", f"not installed ({error})"))
    return out


def peer_table(lists, args) -> None:
    print("\n## (3) peers for designs torch lacks (same rounds)")
    print("| list | peer | step ms | ctopt design (auto) | step ms | ctopt / peer |")
    print("|---|---|---|---|---|---|")
    for entry in peer_builders():
        if len(entry) == 2:
            print(f"| - | {entry[0]} | skipped: {entry[1]} | | | |")
            continue
        label, design, build = entry
        for name in lists:
            per = (3 + 2 * len(ctopt.zoo.get(design).states)) * 4
            peer = Variant(label, build, name, args.quick, args.device, per)
            ours = Variant(design, ctopt_opt(design), name, args.quick, args.device, per)
            interleaved([peer, ours], args.reps, args.device, ours.numel)
            print(f"| {LIST_TITLES[name]} | {label} | {peer.ms:.2f} | {design} | {ours.ms:.2f} | "
                  f"{ours.ms / peer.ms:.2f}x |")
            peer.finish(), ours.finish()


def ctopt_after(name: str, steps: int):
    """ctopt's optimizer, ``auto``, as it runs once its parameters have taken ``steps`` steps
    (their step counts set to it after a first step)."""
    cls = ctopt.to_torch(ctopt.zoo.get(name))

    def build(ps):
        opt = cls(ps)
        opt.step()
        for state in opt.state.values():
            state["step"].fill_(float(steps))
        return opt, opt.step
    return build


def small_table(args) -> None:
    after = ctopt.export.backends.AUTO_COMPILE_AFTER_STEPS
    print("\n## (7) small models: Adam, ctopt backend='auto' in its first steps (the flat "
          f"layout, its eager kernel) and after {after} steps (compiled), and backend='foreach'")
    print("| list | tensors | elements | variant | step ms | vs torch fused | first steps - compiled "
          "ms |")
    print("|---|---|---|---|---|---|---|")
    warm_kernel("adam", args.device)
    for name in ("policy", "mlp", "smallconv"):
        builders = {"torch fused": torch_adam("fused"), "torch foreach": torch_adam("foreach"),
                    "ctopt adam auto, first steps": ctopt_opt("adam"),
                    f"ctopt adam auto, after {after} steps": ctopt_after("adam", after),
                    "ctopt adam foreach": ctopt_opt("adam", backend="foreach")}
        variants = [Variant(label, b, name, args.quick, args.device, 28)
                    for label, b in builders.items()]
        interleaved(variants, args.reps, args.device, variants[0].numel)
        saved = variants[2].ms - variants[3].ms
        for v in variants:
            print(f"| {LIST_TITLES[name]} | {len(v.ps)} | {v.numel:,} | {v.label} | "
                  f"{v.ms:.3f} | {v.ms / variants[0].ms:.2f}x | {saved:.3f} |")
            v.finish()
        print(f"<!-- {name}: {load()} -->")


class Scaled:
    """A step with GradScaler-style ``grad_scale``/``found_inf`` tensors (as the scaler passes
    them to an optimizer that supports them), on bfloat16 parameters. The scale is 1: the step
    writes the unscaled gradient back (torch's fused Adam and ctopt alike), so a scale of 1024
    over the rounds would divide the same gradients again and again into subnormal numbers,
    whose arithmetic is many times slower (a backward pass makes fresh gradients each step)."""

    def __init__(self, opt):
        self.opt = opt
        self.opt.grad_scale = torch.tensor(1.0)
        self.opt.found_inf = torch.tensor(0.0)

    def __call__(self):
        self.opt.step()


def precision_table(lists, args) -> None:
    print("\n## (4) mixed precision: bfloat16 parameters and gradients")
    print("| list | variant | step ms | vs torch fused (bf16) | state MB |")
    print("|---|---|---|---|---|")
    for name in lists:
        def bf16(build):
            def wrapped(ps):
                with torch.no_grad():
                    for p in ps:
                        p.data = p.data.bfloat16()
                        p.grad = p.grad.bfloat16()
                return build(ps)
            return wrapped

        def scaled(build):
            def wrapped(ps):
                opt, _ = build(ps)
                return opt, Scaled(opt)
            return wrapped

        builders = {"torch fused, bf16 state": bf16(torch_adam("fused")),
                    "torch fused, bf16 state, grad_scale + found_inf":
                        bf16(scaled(torch_adam("fused"))),
                    "ctopt adam auto, bf16 state": bf16(ctopt_opt("adam")),
                    "ctopt adam auto, bf16 state, grad_scale + found_inf":
                        bf16(scaled(ctopt_opt("adam"))),
                    "ctopt adam auto, master weights (fp32 master + state)":
                        bf16(ctopt_opt("adam", master_weights=True)),
                    "ctopt adam auto, master weights, grad_scale + found_inf":
                        bf16(scaled(ctopt_opt("adam", master_weights=True))),
                    "torch fused, fp32 parameters and state": torch_adam("fused")}
        variants = []
        for label, b in builders.items():
            try:
                variants.append(Variant(label, b, name, args.quick, args.device, 0))
            except (TypeError, RuntimeError, NotImplementedError) as error:
                print(f"| {LIST_TITLES[name]} | {label} | skipped: {type(error).__name__}: "
                      f"{error} | | |")
        interleaved(variants, args.reps, args.device, variants[0].numel)
        for v in variants:
            print(f"| {LIST_TITLES[name]} | {v.label} | {v.ms:.2f} | {v.ms / variants[0].ms:.2f}x"
                  f" | {mb(v.state)} |")
            v.finish()


def iteration_table(args) -> None:
    print("\n## (5) a whole training iteration: zero_grad, forward, backward, step "
          "(transformer encoder, batch 4 x 32 tokens)")
    print("| variant | zero_grad(set_to_none=) | iteration ms | vs torch fused |")
    print("|---|---|---|---|")
    x = torch.randn(4, 32, 192 if args.quick else 384, device=args.device)
    rows = []
    for set_to_none in (True, False):
        runs = []
        for label, build in (("torch fused", torch_adam("fused")),
                             ("ctopt adam auto", ctopt_opt("adam")),
                             ("ctopt adam auto, small pages", ctopt_opt("adam", huge=False))):
            torch.manual_seed(0)
            model = (models.transformer(192, 3) if args.quick else models.transformer()).to(
                args.device)
            opt, step = build(list(model.parameters()))

            def iteration(model=model, opt=opt, step=step, set_to_none=set_to_none):
                opt.zero_grad(set_to_none=set_to_none)
                model(x).square().mean().backward()
                step()
            for _ in range(3):
                iteration()
            runs.append((label, iteration, []))
        for r in range(args.reps):
            for i in range(len(runs)):  # each variant first in turn
                _, fn, times = runs[(r + i) % len(runs)]
                sync(args.device)
                t0 = time.perf_counter()
                fn()
                sync(args.device)
                times.append(time.perf_counter() - t0)
        base = statistics.median(runs[0][2])
        for label, _, times in runs:
            rows.append(f"| {label} | {set_to_none} | {statistics.median(times) * 1e3:.1f} | "
                        f"{statistics.median(times) / base:.2f}x |")
    print("\n".join(rows))


def compile_times(count: int, numel: int) -> tuple[float, float, float, float]:
    """Cold and warm first-step overhead of the compiled path, each in a fresh process; the
    warm one again with the flat buffers on small pages (``ctopt.export.pages.HUGE_PAGES``
    False: the first write of fresh huge pages is part of the first step) and again with the
    kernels not remembered (``ctopt.export.stored.STORE`` False: Inductor's cache alone, as
    ``torch.compile`` finds it)."""
    code = (
        "import time, torch, ctopt, sys\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from measure import make_params, shapes_mixed\n"
        "from ctopt.export import pages, stored\n"
        "pages.HUGE_PAGES = pages.HUGE_PAGES and sys.argv[1] != 'small'\n"
        "stored.STORE = sys.argv[1] != 'inductor'\n"
        f"shapes = [({numel},)] if {count} == 1 else shapes_mixed({numel}, {count})\n"
        "ps = make_params(shapes)\n"
        "for p in ps: p.grad = torch.randn_like(p)\n"
        "opt = ctopt.to_torch(ctopt.zoo.get('adam'))(ps, backend='compiled')\n"
        "t0 = time.perf_counter(); opt.step(); first = time.perf_counter() - t0\n"
        "t0 = time.perf_counter(); opt.step(); second = time.perf_counter() - t0\n"
        "print(first - second)\n"
    )
    kinds = ("huge", "small", "inductor")
    out: dict = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        # the cold run, then the warm ones alternated (a later process finds more in the
        # system's file caches): each warm figure is the mean of two
        for kind in ("huge", *kinds, *kinds):
            res = subprocess.run([sys.executable, "-c", code, kind], env=env,
                                 capture_output=True, text=True)
            out[kind].append(float(res.stdout.strip().splitlines()[-1]) if res.returncode == 0
                             else float("nan"))
    cold = out["huge"].pop(0)
    return cold, *(statistics.mean(out[kind]) for kind in kinds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, few rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lists", default="one,transformer,convnet,mixer,mixed,resnet,gpt2",
                        help="parameter lists (comma-separated): " + ", ".join(LIST_TITLES))
    parser.add_argument("--designs", default="all", help="'all' or comma-separated zoo names")
    parser.add_argument("--reps", type=int, default=0, help="rounds (default 15; quick 5)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time torch.compile(torch Adam.step) (slow to compile)")
    parser.add_argument("--tables", default="1,2,3,4,5,7,6", help="which tables to print")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default, 1 with --quick); 1 is "
                             "the most stable on a shared machine")
    args = parser.parse_args(argv)
    if args.quick and not args.threads:
        args.threads = 1  # a smoke run on a shared machine: the most stable setting
    if args.threads:
        torch.set_num_threads(args.threads)
    timing_allocator()  # (peak memory is measured with its own setting: see measure)
    args.reps = args.reps or (5 if args.quick else 15)
    lists = args.lists.split(",")
    designs = ctopt.zoo.names() if args.designs == "all" else args.designs.split(",")
    if args.quick and args.designs == "all":
        designs = ["adam", "sgd", "dgclip", "adan"]
    tables = set(args.tables.split(","))
    print(f"# ctopt bench_step  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}"
          f"{', quick' if args.quick else ''}")
    if "1" in tables:
        adam_table(lists, args)
    if "2" in tables:
        zoo_table(lists, designs, args)
    if "3" in tables:
        peer_table([n for n in ("transformer", "mixed") if n in lists] or lists[:1], args)
    if "4" in tables:
        precision_table([n for n in ("transformer",) if n in lists] or lists[:1], args)
    if "5" in tables:
        iteration_table(args)
    if "7" in tables:
        small_table(args)
    if "6" in tables and args.device == "cpu":
        print("\n## (6) compile time of the compiled path (Adam; fresh process each; cold = "
              "empty Inductor cache, warm = the cache of the cold run)")
        for count in ((50,) if args.quick else (1, 200, 1000)):
            cold, warm, small, inductor = compile_times(count, 1_000_000 if args.quick
                                                        else 10_000_000)
            print(f"- {count} tensor{'s' if count > 1 else ''}: cold {cold:.1f} s, "
                  f"warm {warm:.1f} s (flat buffers on small pages: {small:.1f} s; kernel not "
                  f"remembered, Inductor's cache alone: {inductor:.1f} s)")
    print(f"\n# done {time.strftime('%H:%M UTC', time.gmtime())}; {load()}")


if __name__ == "__main__":
    main()
