"""The export parity checks on CUDA: every backend equals the float64 oracle on the GPU, paths
agree in float32, Adam equals torch's fused CUDA Adam, and CPU checkpoints move to CUDA.
Skipped cleanly when CUDA is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spies import kernel_calls
from test_export_parity import CASES, PATH_RTOL32, TORCH_RTOL32, design_of, problem, rel_err

import ctopt

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
]
GPU_CASES = ("adam", "adan", "dgclip", "rmsprop", "adamssm", "nesterov")


def cuda_run(cls, values, steps=20, dtype=torch.float64, **kwargs) -> np.ndarray:
    grad_fn, x0 = problem()
    sizes = (3, 4, 4)
    params, i = [], 0
    for n in sizes:
        params.append(torch.nn.Parameter(torch.tensor(x0[i:i + n], dtype=dtype, device="cuda")))
        i += n
    opt = cls(params, **values, **kwargs)
    traj = [x0]
    for _ in range(steps):
        x = np.concatenate([p.detach().double().cpu().numpy() for p in params])
        g, i = grad_fn(x), 0
        for p in params:
            p.grad = torch.tensor(g[i:i + p.numel()], dtype=dtype, device="cuda")
            i += p.numel()
        opt.step()
        traj.append(np.concatenate([p.detach().double().cpu().numpy() for p in params]))
    return np.array(traj)


@pytest.mark.parametrize("backend", ["forloop", "foreach", "compiled", "auto"])
@pytest.mark.parametrize("case", GPU_CASES)
def test_cuda_equals_oracle_float64(case, backend):
    """Every path, ``auto`` on this small model included (the flat layout with the design's
    for-loop code on its buffers)."""
    design, values = design_of(case), CASES[case][1]
    grad_fn, x0 = problem()
    reference = ctopt.simulate(design, grad_fn, x0, 20, **values)
    out = cuda_run(ctopt.to_torch(design, check=False), values, backend=backend)
    assert rel_err(out, reference) <= 1e-12


@pytest.mark.parametrize("case", GPU_CASES)
def test_cuda_paths_agree_float32(case):
    cls = ctopt.to_torch(design_of(case), check=False)
    values = CASES[case][1]
    runs = [cuda_run(cls, values, dtype=torch.float32, backend=b)
            for b in ("forloop", "foreach", "compiled", "auto")]
    for run in runs[1:]:
        assert rel_err(run, runs[0]) <= PATH_RTOL32


def test_cuda_adam_equals_torch_fused():
    values = dict(lr=0.01, weight_decay=0.1)
    expected = cuda_run(lambda p, **v: torch.optim.Adam(p, fused=True, **v), values, steps=100,
                        dtype=torch.float32)
    for backend in ("foreach", "compiled", "auto"):
        ours = cuda_run(ctopt.to_torch(ctopt.zoo.get("adam")), values, steps=100,
                        dtype=torch.float32, backend=backend)
        assert rel_err(ours, expected) <= TORCH_RTOL32


def test_cpu_checkpoint_resumes_on_cuda():
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    cpu = [torch.nn.Parameter(torch.randn(5))]
    opt = Adam(cpu, lr=0.01)
    cpu[0].grad = torch.randn(5)
    opt.step()
    gpu = [torch.nn.Parameter(cpu[0].detach().cuda())]
    moved = Adam(gpu, lr=0.01, backend="compiled")
    moved.load_state_dict(opt.state_dict())
    assert moved.state[gpu[0]]["exp_avg"].is_cuda
    gpu[0].grad = torch.ones(5, device="cuda")
    cpu[0].grad = torch.ones(5)
    moved.step()
    opt.step()
    assert torch.allclose(gpu[0].cpu(), cpu[0], atol=1e-6)


@pytest.mark.parametrize("backend", ["compiled", "auto"])
def test_cuda_flat_layout_is_one_call_and_equals_forloop(backend):
    """The flat layout on CUDA: one kernel call per step for a whole model, compiled and (auto
    on a small model) the design's for-loop code on the flat buffers."""
    import copy

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).cuda()
    twin = copy.deepcopy(model)
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    opt = Adam(model.parameters(), lr=0.01, backend=backend)
    assert opt._resolve_backend() == ("flat" if backend == "auto" else backend)
    ref = Adam(twin.parameters(), lr=0.01, backend="forloop")
    calls = kernel_calls(opt)
    x = torch.randn(16, 5, device="cuda")
    for _ in range(4):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    numel = sum(p.numel() for p in model.parameters())
    assert calls[1:] == [numel] * 3
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=PATH_RTOL32, atol=1e-6)


def test_cuda_usual_step_is_remembered_and_makes_no_host_sync():
    """After the layout's first steps, the next ones are the remembered step (no call is bound
    on a GPU: the ordinary one runs), equal to torch's fused CUDA Adam, with no host sync."""
    import copy

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).cuda()
    twin = copy.deepcopy(model)
    opt = ctopt.to_torch(ctopt.zoo.get("adam"))(model.parameters(), lr=0.01,
                                                backend="compiled")
    ref = torch.optim.Adam(twin.parameters(), lr=0.01, fused=True)
    x = torch.randn(16, 5, device="cuda")
    for i in range(6):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad(set_to_none=False)
            m(x).square().mean().backward()
            if o is opt and i >= 4:
                assert opt._usual is not None
                torch.cuda.set_sync_debug_mode("error")
            try:
                o.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=TORCH_RTOL32, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_grad_scaling_equals_torch_fused_without_host_sync(dtype):
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(n, device="cuda").to(dtype)) for n in (300, 37, 1)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    ours = Adam(ps, lr=0.01, backend="compiled")
    ref = torch.optim.Adam(qs, lr=0.01, fused=True)
    for i in range(6):
        for p, q in zip(ps, qs, strict=True):
            g = (torch.randn(p.shape, device="cuda") * 1024).to(dtype)
            p.grad, q.grad = g.clone(), g.clone()
        for opt in (ours, ref):
            opt.grad_scale = torch.tensor(1024.0, device="cuda")
            opt.found_inf = torch.tensor(1.0 if i == 2 else 0.0, device="cuda")
        ref.step()
        if i >= 3:  # compiled and warm: the step must not wait for the device
            torch.cuda.set_sync_debug_mode("error")
        try:
            ours.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert [float(ours.state_dict()["state"][i]["step"]) for i in range(3)] == [5.0] * 3
    tol = TORCH_RTOL32 if dtype == torch.float32 else 3 * 2.0 ** -8
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(p.float(), q.float(), rtol=tol, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamssm", "nesterov"])
def test_cuda_capturable_step_is_captured_in_a_graph_and_replays_like_eager_steps(name):
    """``capturable=True``: warm up on a side stream, capture one step, replay it with new
    gradients copied into the same buffers; equal to an uncaptured twin bit for bit."""
    cls = ctopt.to_torch(ctopt.zoo.get(name))
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(n, device="cuda")) for n in (300, 37, 5)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    for p in (*ps, *qs):
        p.grad = torch.zeros_like(p)
    ours = cls(ps, lr=0.01, backend="compiled", capturable=True)
    twin = cls(qs, lr=0.01, backend="compiled", capturable=True)
    grads = [[torch.randn(p.shape, device="cuda") for p in ps] for _ in range(8)]

    def load(params, i):
        for p, g in zip(params, grads[i], strict=True):
            p.grad.copy_(g)  # in place: the captured step reads these buffers

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(3):
            load(ps, i)
            ours.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ours.step()
    for i in range(3):
        load(qs, i)
        twin.step()
    for i in range(3, 8):
        load(ps, i)
        graph.replay()
        load(qs, i)
        twin.step()
    torch.cuda.synchronize()
    # capturing records the step without running it: 3 warm-up steps and 5 replays, as the twin
    assert [float(ours.state[p]["step"]) for p in ps] == [8.0] * 3
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)
    del graph


def test_cuda_capturable_step_makes_no_host_sync():
    Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    ps = [torch.nn.Parameter(torch.randn(n, device="cuda")) for n in (300, 37)]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = Adam(ps, lr=0.01, backend="compiled", capturable=True)
    for _ in range(3):
        opt.step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
