"""Every GPU figure of docs/performance.md in one run (a few minutes on one GPU)::

    python benchmarks/bench_gpu.py            # needs CUDA; prints markdown tables
    python benchmarks/bench_gpu.py --quick    # smaller sizes
    python benchmarks/bench_gpu.py --device cpu --quick --lists one   # a dry run of the script

(1) Share of HBM bandwidth: Adam (ctopt ``backend="auto"``, torch fused) on one flat tensor of
64M and 256M float32 elements, against the best streaming kernel measured here and the nominal
peak of the device (2 x memory clock x bus width). (2) The model lists of bench_step.py against
torch's fused CUDA Adam (interleaved rounds, medians). (3) Mixed precision: bfloat16 with
GradScaler's ``grad_scale``/``found_inf``, and whether that step synchronizes with the host
(``torch.cuda.set_sync_debug_mode("error")``). (4) CUDA-graph capture of one step, ctopt's
``capturable=True`` beside torch's ``capturable=True`` fused Adam. Nothing is asserted; failures
are printed. ``--device cpu`` runs the same tables on the CPU at small sizes (CUDA's events,
sync check and graphs left out), so that the script is known to run before a GPU is at hand
(``tests/test_bench_gpu.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_step  # noqa: E402
import measure  # noqa: E402

import ctopt  # noqa: E402

Adam = ctopt.to_torch(ctopt.zoo.get("adam"))


def nominal_bandwidth() -> float | None:
    props = torch.cuda.get_device_properties(0)
    clock = getattr(props, "memory_clock_rate", None)  # kHz
    width = getattr(props, "memory_bus_width", None)  # bits
    if not clock or not width:
        return None
    return 2 * clock * 1e3 * width / 8


def timed(fn, reps: int, device: str) -> float:
    """The median time of ``fn`` in seconds (CUDA: between two events on the stream)."""
    for _ in range(3):
        fn()
    measure.sync(device)
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = (torch.cuda.Event(enable_timing=True),
                          torch.cuda.Event(enable_timing=True))
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bandwidth_table(args) -> None:
    print("\n## (1) share of HBM bandwidth, Adam float32 on one tensor")
    peak = nominal_bandwidth() if args.device == "cuda" else None
    print(f"nominal peak: {'n/a' if peak is None else f'{peak / 1e9:.0f} GB/s'}")
    print("| elements | copy GB/s | variant | step ms | GB/s (28 B/elem) | % of copy | % of nominal |")
    print("|---|---|---|---|---|---|---|")
    dev = args.device
    for numel in args.sizes:
        a, b = torch.empty(numel, device=dev), torch.empty(numel, device=dev)
        copy = 8 * numel / timed(lambda a=a, b=b: a.copy_(b), args.reps, dev)
        del a, b
        for label, make in (("torch fused", lambda ps: torch.optim.Adam(ps, fused=True)),
                            ("ctopt adam auto", lambda ps: Adam(ps))):
            p = torch.nn.Parameter(torch.randn(numel, device=dev))
            p.grad = torch.randn(numel, device=dev)
            opt = make([p])
            t = timed(opt.step, args.reps, dev)
            rate = 28 * numel / t
            nominal = "n/a" if peak is None else f"{100 * rate / peak:.0f} %"
            print(f"| {numel / 1e6:g}M | {copy / 1e9:.0f} | {label} | {t * 1e3:.3f} | "
                  f"{rate / 1e9:.0f} | {100 * rate / copy:.0f} % | {nominal} |")
            del opt, p
            if dev == "cuda":
                torch.cuda.empty_cache()


def scaling_table(args) -> None:
    print(f"\n## (3) bfloat16 with grad_scale/found_inf on {args.device}")
    print("| variant | step ms | host sync in the step |")
    print("|---|---|---|")
    dev = args.device
    ps0 = measure.model_list(args.lists[0], args.quick, dev)
    for label, make in (("torch fused", lambda ps: torch.optim.Adam(ps, fused=True)),
                        ("ctopt adam auto", lambda ps: Adam(ps))):
        ps = [torch.nn.Parameter(p.detach().bfloat16()) for p in ps0]
        for p, q in zip(ps, ps0, strict=True):
            p.grad = q.grad.bfloat16()
        opt = make(ps)
        # scale 1: the step writes the unscaled gradient back, so a scale of 1024 would divide
        # the same gradients round after round into subnormal numbers (see bench_step.Scaled)
        opt.grad_scale = torch.tensor(1.0, device=dev)
        opt.found_inf = torch.tensor(0.0, device=dev)
        t = timed(opt.step, args.reps, dev)
        if dev != "cuda":
            print(f"| {label} | {t * 1e3:.3f} | n/a (no CUDA) |")
            continue
        try:
            torch.cuda.set_sync_debug_mode("error")
            opt.step()
            synced = "no"
        except RuntimeError as error:
            synced = f"yes ({str(error).splitlines()[0][:80]})"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        print(f"| {label} | {t * 1e3:.3f} | {synced} |")


def capture_table(args) -> None:
    print("\n## (4) CUDA-graph capture of one step")
    if args.device != "cuda":
        print("(left out: CUDA graphs need CUDA)")
        return
    print("| variant | captured | replay ms |")
    print("|---|---|---|")
    for label, make in (("torch fused capturable",
                         lambda ps: torch.optim.Adam(ps, lr=torch.tensor(1e-3, device="cuda"),
                                                     fused=True, capturable=True)),
                        ("ctopt adam capturable",
                         lambda ps: Adam(ps, backend="compiled", capturable=True))):
        ps = measure.model_list(args.lists[0], args.quick, "cuda")
        opt = make(ps)
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    opt.step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                opt.step()
            t = timed(graph.replay, args.reps, "cuda")
            print(f"| {label} | yes | {t * 1e3:.3f} |")
        except Exception as error:  # report, do not stop the run
            message = traceback.format_exception_only(type(error), error)[-1].strip()[:100]
            print(f"| {label} | no: {message} | |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--lists", default="transformer,convnet,mixer,mixed,resnet,gpt2",
                        help="parameter lists of bench_step.py (the first also for tables 3, 4)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a dry run of every table at small sizes")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: no GPU figures")
        return 0
    args.lists = args.lists.split(",")
    if args.device == "cuda":
        args.sizes = (16_000_000, 64_000_000) if args.quick else (64_000_000, 256_000_000)
        name = torch.cuda.get_device_name(0)
    else:
        args.sizes, name = (1 << 16,), "CPU (dry run)"
    print(f"# ctopt bench_gpu  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{name}, torch {torch.__version__}", flush=True)
    failed = 0
    args.torch_compile = False
    for table in (bandwidth_table, scaling_table, capture_table,
                  lambda args: bench_step.adam_table(args.lists, args, 2)):
        try:
            table(args)
        except Exception:  # one table failing must not hide the others
            traceback.print_exc()
            failed += 1
        sys.stdout.flush()
    return failed


if __name__ == "__main__":
    sys.exit(main())
