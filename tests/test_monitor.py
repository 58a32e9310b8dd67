"""SharpnessMonitor against an independent dense computation: the explicit Hessian of a tiny
model (torch.autograd.functional.hessian), D read from the optimizer's state by hand as each
torch.optim algorithm defines it, and the eigenvalues of D^-1/2 H D^-1/2."""

import subprocess
import sys

import numpy as np
import pytest

import ctopt

torch = pytest.importorskip("torch")


def _problem(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(12, 3, dtype=torch.float64)
    y = torch.randn(12, 2, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    model = model.double()

    def loss():
        return torch.nn.functional.mse_loss(model(x), y)

    loss.data = (x, y)
    return model, loss


def _dense(model, loss, diag):
    """lambda_max of D^-1/2 H D^-1/2 from the explicit Hessian of the flattened parameters."""
    x, y = loss.data
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def flat_loss(flat):
        parts = dict(zip(names, [t.reshape(s) for t, s in
                                 zip(torch.split(flat, sizes), shapes, strict=True)], strict=True))
        out = torch.func.functional_call(model, parts, (x,))
        return torch.nn.functional.mse_loss(out, y)

    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    h = torch.autograd.functional.hessian(flat_loss, flat0).numpy()
    d = np.concatenate([t.detach().reshape(-1).numpy() for t in diag])
    s = 1 / np.sqrt(d)
    return float(np.linalg.eigvalsh(s[:, None] * h * s[None, :])[-1])


def _train(opt, model, loss, steps=15):
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()


def _adam_d(st, gr, p):
    """torch's Adam: sqrt(exp_avg_sq / (1 - beta2**step)) + eps."""
    return (st["exp_avg_sq"] / (1 - gr["betas"][1] ** float(st["step"]))).sqrt() + gr["eps"]


CASES = {
    "adam": (lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99)), _adam_d,
             2 * 1.8 / (0.2 * 0.01)),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.0), _adam_d, 38 / 0.01),
    "rmsprop": (lambda p: torch.optim.RMSprop(p, lr=0.01),
                lambda st, gr, p: st["square_avg"].sqrt() + gr["eps"], 2 / 0.01),
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=0.1),
                lambda st, gr, p: st["sum"].sqrt() + gr["eps"], 2 / 0.1),
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5),
            lambda st, gr, p: torch.ones_like(p), 2 * 1.5 / 0.1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_monitor_matches_the_dense_hessian(name):
    make, diag_of, critical = CASES[name]
    model, loss = _problem()
    opt = make(model.parameters())
    _train(opt, model, loss)
    mon = ctopt.SharpnessMonitor(opt, loss, every=1, iters=40, progress=False)
    m = mon.measure()
    group = opt.param_groups[0]
    diag = [diag_of(opt.state[p], group, p) for p in model.parameters()]
    assert m.sharpness == pytest.approx(_dense(model, loss, diag), rel=1e-8)
    assert m.critical == pytest.approx(critical, rel=1e-12)
    assert m.loss == pytest.approx(float(loss().detach()), rel=1e-12)


def test_exported_optimizer_reads_D_from_its_own_state():
    model, loss = _problem(1)
    opt = ctopt.to_torch(ctopt.zoo.get("adabelief"))(model.parameters(), lr=0.01)
    _train(opt, model, loss)
    mon = ctopt.SharpnessMonitor(opt, loss, every=1, iters=40, progress=False)
    b2, eps = 0.999, 1e-16
    diag = [(opt.state[p]["exp_avg_var"] / (1 - b2 ** float(opt.state[p]["step"]))).sqrt() + eps
            for p in model.parameters()]
    assert mon.measure().sharpness == pytest.approx(_dense(model, loss, diag), rel=1e-8)
    assert mon.critical == pytest.approx(38 / 0.01, rel=1e-12)


def test_history_flags_plot_and_cost():
    import matplotlib

    matplotlib.use("Agg")
    model, loss = _problem(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = ctopt.SharpnessMonitor(opt, loss, every=2, iters=10, tol=0.5, progress=True, total=6)
    for _ in range(6):
        opt.zero_grad()
        loss().backward()
        mon.step()
    mon.close()
    assert [m.step for m in mon.history] == [2, 4, 6]
    assert all(m.flag == (m.sharpness >= 0.5 * 20.0) for m in mon.history)
    assert "10 Hessian-vector products" in mon.cost
    drawn = mon.plot()
    line, crit = drawn.ax.get_lines()
    assert drawn.lines == (line, crit) and drawn.data == tuple(mon.history)
    assert list(line.get_xdata()) == [2, 4, 6] and set(crit.get_ydata()) == {20.0}


def test_bad_arguments_and_unknown_optimizers_are_refused():
    model, loss = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ctopt.CtoptError, match="every"):
        ctopt.SharpnessMonitor(opt, loss, every=0)
    with pytest.raises(ctopt.CtoptError, match="tol"):
        ctopt.SharpnessMonitor(opt, loss, tol=1.5)
    with pytest.raises(ctopt.CtoptError, match="Adam, AdamW"):
        ctopt.SharpnessMonitor(torch.optim.LBFGS(model.parameters()), loss)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(ctopt.CtoptError, match="take an optimizer step"):
        ctopt.SharpnessMonitor(adam, loss, progress=False).measure()


def test_import_ctopt_does_not_import_torch():
    code = "import ctopt, sys; ctopt.critical_sharpness; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
