"""torch's generic optimizer checks (test/test_optim.py's TestOptimRenewed, CPU) against every
torch-equivalent exported design, driven by torch's own OptimizerInfo database
(``torch.testing._internal.common_optimizers``, shipped with torch): its configurations, its
error inputs and its schedulers. Each check restates one TestOptimRenewed test; an adapter maps a
torch constructor call (``Adam(amsgrad=True)``, ``SGD(momentum=0.9, nesterov=True)``, ...) to the
ctopt design that is that algorithm. The differences from torch are listed in ``DIFFERENCES``
(and in docs/reliability.md) with their reasons. The full battery is ``slow``; the default run
checks a representative subset."""

from __future__ import annotations

import copy
import functools
import io

import pytest
import torch
from torch.nn import Parameter

import ctopt
from ctopt.errors import CtoptError, UnsupportedError

common = pytest.importorskip("torch.testing._internal.common_optimizers")

TORCH_NAMES = ("Adam", "AdamW", "Adagrad", "RMSprop", "SGD")
INFOS = {o.optim_cls.__name__: o for o in common.optim_db if o.optim_cls.__name__ in TORCH_NAMES}


def _design(torch_name: str, kw: dict) -> str:
    """The zoo design that is torch's ``torch_name(**kw)``; pops the algorithm options."""
    if torch_name in ("Adam", "AdamW"):
        amsgrad = kw.pop("amsgrad", False)
        decoupled = kw.pop("decoupled_weight_decay", torch_name == "AdamW")
        if amsgrad and decoupled:
            raise UnsupportedError("AdamW(amsgrad=True): no zoo design")
        return "amsgrad" if amsgrad else "adamw" if decoupled else "adam"
    if torch_name == "RMSprop":
        if kw.pop("centered", False):
            raise UnsupportedError("RMSprop(centered=True): no zoo design")
        return "rmsprop"
    if torch_name == "SGD":
        nesterov, momentum = kw.pop("nesterov", False), kw.get("momentum", 0)
        if nesterov:
            return "nesterov"
        if isinstance(momentum, torch.Tensor) or momentum != 0:
            return "heavy_ball"
        kw.pop("momentum", None)
        kw.pop("dampening", None)  # without momentum it changes nothing
        return "sgd"
    return "adagrad"


def _construct(torch_name, params, **kwargs):
    kw = dict(kwargs)
    for flag in ("differentiable", "fused", "capturable"):
        if kw.pop(flag, False):
            raise UnsupportedError(f"{flag}=True: not a ctopt eager path")
    foreach = kw.pop("foreach", None)
    backend = "auto" if foreach is None else "foreach" if foreach else "forloop"
    name = _design(torch_name, kw)
    return ctopt.to_torch(ctopt.zoo.get(name))(params, backend=backend, **kw)


def adapter(torch_name: str):
    """A class-like callable named as torch's: ``adapter("Adam")(params, amsgrad=True)``."""
    return type(torch_name, (), {"__new__": lambda cls, params, **kw:
                                 _construct(torch_name, params, **kw)})


def configs(torch_name: str, dtype=torch.float32) -> list[dict]:
    """torch's configurations of this optimizer on CPU, plus the forloop/foreach variants."""
    out = []
    for oi in INFOS[torch_name].optim_inputs_func(device="cpu", dtype=dtype):
        for foreach in (False, True):
            out.append({**copy.deepcopy(oi.kwargs), "foreach": foreach})
    return out


def covered(torch_name: str, dtype=torch.float32) -> list[dict]:
    """The configurations a zoo design implements (the others are listed in DIFFERENCES)."""
    keep = []
    for kw in configs(torch_name, dtype):
        try:
            _design(torch_name, dict(kw))
        except UnsupportedError:
            continue
        keep.append(kw)
    return keep


#: where ctopt differs from torch on purpose (desc of torch's error input, or a configuration)
DIFFERENCES = {
    "a param group cannot have duplicate parameters":
        "torch warns (and says it will become an error); ctopt refuses (ParameterError)",
    "lr as Tensor doesn't work with foreach & not capturable":
        "ctopt's tensor hyperparameters are live on every path, so there is nothing to refuse",
    "betas must be either both floats or both Tensors": "ctopt accepts mixed tensor/float betas",
    r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True":
        "ctopt's tensor betas are live on every path",
    "RMSprop(centered=True)": "no zoo design keeps RMSprop's centred second moment (grad_avg)",
    "AdamW(amsgrad=True)": "no zoo design combines amsgrad with decoupled weight decay",
}


# ------------------------------------------------------------------------ the checks
def check_errors(torch_name):
    """test_errors: every torch error input raises the same error type (a CtoptError with
    ctopt's own wording where torch's differs), or is a listed difference."""
    cls = adapter(torch_name)
    outcomes = {}
    for ei in INFOS[torch_name].optim_error_inputs_func(device="cpu", dtype=torch.float32):
        oi = ei.optimizer_error_input
        desc = oi.desc
        try:
            opt = cls(oi.params, **oi.kwargs)
            if ei.error_on == common.OptimizerErrorEnum.STEP_ERROR:
                opt.step()
            outcomes[desc] = "no error"
        except Exception as error:  # noqa: BLE001 - classified below
            import re
            same = issubclass(ei.error_type, Warning) is False and isinstance(error, ei.error_type)
            if same and re.search(ei.error_regex, str(error)):
                outcomes[desc] = "same"
            elif same and isinstance(error, CtoptError):
                outcomes[desc] = "same type, ctopt wording"
            else:
                outcomes[desc] = f"{type(error).__name__}: {error}"
    for desc, outcome in outcomes.items():
        if desc in DIFFERENCES:
            assert outcome != "same", f"{desc}: listed as a difference but behaves as torch"
            continue
        assert outcome in ("same", "same type, ctopt wording"), (desc, outcome)
    return outcomes


def _loss(w, b, x):
    return (w.mv(x) + b).pow(2).sum()


def check_goes_right_direction(torch_name, contiguous=True, with_lrsched=False):
    cls = adapter(torch_name)
    schedulers = INFOS[torch_name].scheduler_inputs if with_lrsched else [None]
    for scheds in schedulers:
        for kw in covered(torch_name):
            shape = ((10, 5), (10,)) if contiguous else ((10, 5, 2), (10, 2))
            w, b = (Parameter(torch.randn(s)) if contiguous else Parameter(torch.randn(s)[..., 0])
                    for s in shape)
            x = torch.randn(5)
            opt = cls([w, b], **kw)
            live = [s(opt) for s in (scheds or [])]

            def closure(opt=opt, w=w, b=b, x=x):
                opt.zero_grad()
                loss = _loss(w, b, x)
                loss.backward()
                return loss

            initial = closure().item()
            for _ in range(20):
                loss = closure()
                opt.step()
                for s in live:
                    s.step(loss) if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) \
                        else s.step()
            final = closure().item()
            assert final > initial if kw.get("maximize") else final < initial, kw


def check_tensor_lr(torch_name):
    cls = adapter(torch_name)
    for kw in covered(torch_name):
        kw = {k: v for k, v in kw.items() if k != "lr"}
        w, b = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
        wc, bc = (p.detach().clone().requires_grad_(True) for p in (w, b))
        x = torch.randn(5)
        lr = torch.tensor(1e-3)
        ref = cls([w, b], lr=lr.item(), **kw)
        opt = cls([wc, bc], lr=lr, **kw)
        for _ in range(5):
            for o, p, q in ((ref, w, b), (opt, wc, bc)):
                o.zero_grad()
                _loss(p, q, x).backward()
                o.step()
            assert torch.equal(w, wc) and torch.equal(b, bc), kw


def check_sparse(torch_name, steps=1800):
    """test_rosenbrock_sparse: cyclic coordinate descent with uncoalesced sparse gradients
    equals the dense run, for torch's sparse configurations."""
    cls = adapter(torch_name)
    updates, _ = INFOS[torch_name].metadata_for_sparse
    seen = []
    for kw in covered(torch_name, torch.float64):
        kw = {k: v for k, v in kw.items() if k not in updates}
        if kw in seen:
            continue
        seen.append(kw)
        kw = {**kw, **({"lr": updates["lr"]} if "lr" in updates else {})}
        sparse, dense = Parameter(torch.tensor([1.5, 1.5])), Parameter(torch.tensor([1.5, 1.5]))
        opt_s, opt_d = cls([sparse], **kw), cls([dense], **kw)

        def grad(p, w, as_sparse):
            x, y = p.detach()
            g = torch.stack((-400 * x * (y - x ** 2) - 2 * (1 - x), 200 * (y - x ** 2)))
            i = torch.tensor([[0, 0]] if w else [[1, 1]])
            v = torch.stack([g[0] / 4, g[0] - g[0] / 4]) if w else \
                torch.stack([g[1] - g[1] / 4, g[1] / 4])
            s = torch.sparse_coo_tensor(i, v, (2,))
            return s if as_sparse else s.to_dense()

        start = torch.tensor([1.5, 1.5]).dist(torch.tensor([1.0, 1.0]))
        for i in range(steps):
            sparse.grad, dense.grad = grad(sparse, i % 2, True), grad(dense, i % 2, False)
            opt_s.step()
            opt_d.step()
            torch.testing.assert_close(sparse.detach(), dense.detach(), atol=5e-6, rtol=5e-6)
        if steps >= 1800 and kw.get("maximize"):  # torch's length: the run has moved uphill
            x, y = sparse.detach()
            assert (1 - x) ** 2 + 100 * (y - x ** 2) ** 2 >= 0.5 ** 2 + 100 * 0.75 ** 2
        elif steps >= 1800:  # ... or towards the minimum
            assert sparse.detach().dist(torch.tensor([1.0, 1.0])) <= start


def check_complex(torch_name):
    """test_complex: complex parameters (and a real one) step exactly as their view_as_real."""
    cls = adapter(torch_name)
    for kw in covered(torch_name):
        cps = [torch.randn(10, 5, dtype=torch.complex64, requires_grad=True),
               torch.randn(10, dtype=torch.complex64, requires_grad=True),
               torch.randn(10, 5, requires_grad=True)]
        rps = [(torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_()
               for p in cps]
        copt, ropt = cls(cps, **kw), cls(rps, **kw)
        for _ in range(3):
            for c, r in zip(cps, rps, strict=True):
                r.grad = torch.randn_like(r)
                c.grad = torch.view_as_complex(r.grad.clone()) if c.is_complex() else r.grad.clone()
            ropt.step()
            copt.step()
        for c, r in zip(cps, rps, strict=True):
            assert torch.equal(torch.view_as_real(c) if c.is_complex() else c, r), kw


def check_complex_2d(torch_name):
    """test_complex_2d: a complex pair equals its real and imaginary parts optimized apart."""
    cls = adapter(torch_name)
    for kw in covered(torch_name):
        a = torch.randn(2, dtype=torch.complex64, requires_grad=True)
        re_, im = a.real.detach().clone().requires_grad_(), a.imag.detach().clone().requires_grad_()
        o1, o2 = cls([a], **kw), cls([re_, im], **kw)

        def rosen(t):
            x, y = t
            return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2

        for _ in range(3):
            o1.zero_grad()
            o2.zero_grad()
            rosen(a).abs().backward()
            rosen(torch.complex(re_, im)).abs().backward()
            o1.step()
            o2.step()
            torch.testing.assert_close(a.real, re_)
            torch.testing.assert_close(a.imag, im)


def _model(dtype):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1),
                               torch.nn.Sigmoid()).to(dtype)


def check_foreach_matches_forloop(torch_name):
    """test_foreach_matches_forloop: float64, a frozen layer, a None-grad step, a 0-d param."""
    cls = adapter(torch_name)
    for kw in covered(torch_name, torch.float64):
        if not kw["foreach"]:
            continue
        models, opts = [], []
        for foreach in (False, True):
            model = _model(torch.float64)
            empty = torch.empty((), dtype=torch.float64, requires_grad=True)
            empty.grad = torch.rand_like(empty)
            models.append(model)
            opts.append(cls([*model.parameters(), empty], **{**kw, "foreach": foreach}))
        x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64).reshape(3, 2)
        for i in range(7):
            for model, opt in zip(models, opts, strict=True):
                opt.zero_grad()
                model[2].requires_grad_(i not in (3, 4))
                if i != 2:
                    model(x).sum().backward()
                opt.step()
            for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
                torch.testing.assert_close(p, q)
                for key in opts[0].state[p]:
                    torch.testing.assert_close(opts[0].state[p][key], opts[1].state[q][key])


def check_param_groups(torch_name):
    """test_param_groups_weight_decay and test_param_groups_lr."""
    cls = adapter(torch_name)
    for kw in covered(torch_name):
        w, b = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
        other = Parameter(torch.randn(2))
        frozen = other.detach().clone()
        x = torch.randn(5)
        group_kw = {**kw, "lr": kw.get("lr") or 1e-3}
        group_kw.pop("foreach")
        opt = cls([dict(params=[w], **group_kw), dict(params=[b], **{**group_kw,
                                                                      "weight_decay": 0.0}),
                   dict(params=[other])], lr=1e-28, foreach=kw["foreach"])
        initial = _loss(w, b, x).item()
        for _ in range(20):
            opt.zero_grad()
            loss = _loss(w, b, x)
            loss.backward()
            other.grad = torch.rand_like(other)
            opt.step()
        assert loss.item() > initial if kw.get("maximize") else loss.item() < initial
        assert torch.equal(other.detach(), frozen)


def check_noops(torch_name):
    """test_step_is_noop_when_params_have_no_grad and test_step_is_noop_for_zero_grads."""
    cls = adapter(torch_name)
    for kw in covered(torch_name):
        ps = [torch.randn(2, 3) for _ in range(2)]
        cls(ps, **kw).step(lambda: torch.tensor([1.0]))
        if kw.get("weight_decay", 0) != 0:
            continue
        p = torch.randn((5, 1), requires_grad=True)
        old = p.detach().clone()
        if torch_name == "AdamW":
            kw = {**kw, "lr": 1e-5}
        opt = cls([p], **kw)
        p.grad = torch.zeros_like(p)
        opt.step(lambda: torch.tensor([1.0]))
        torch.testing.assert_close(p.detach(), old)  # AdamW's weight decay moves it by 1e-7


def check_state_dicts(torch_name):
    """test_state_dict_deterministic, test_can_load_older_state_dict,
    test_can_load_from_to_named_state_dict, test_save_load_equality_with_weights_only,
    test_load_nontensor_step."""
    cls = adapter(torch_name)
    not_og = INFOS[torch_name].not_og_supported_flags
    for kw in covered(torch_name):
        for named0, named1 in ((False, False), (True, False), (False, True)):
            w, b = Parameter(torch.randn(2, 3)), Parameter(torch.randn(2))
            x = torch.randn(3)
            names = lambda ps, on: [(f"name{i}", p) for i, p in enumerate(ps)] if on else ps  # noqa: E731
            opt = cls(names([w, b], named0), **kw)

            def fwd(o, p, q, x=x):
                o.zero_grad()
                _loss(p, q, x).backward()

            for _ in range(10):
                fwd(opt, w, b)
                opt.step()
            wc, bc = Parameter(w.detach().clone()), Parameter(b.detach().clone())
            opt_c = cls(names([wc, bc], named1), **kw)
            opt_c.load_state_dict(copy.deepcopy(opt.state_dict()))
            for _ in range(10):
                fwd(opt, w, b)
                fwd(opt_c, wc, bc)
                opt.step()
                opt_c.step()
                assert torch.equal(w, wc) and torch.equal(b, bc)
            strip = lambda sd: [{k: v for k, v in g.items() if k != "param_names"}  # noqa: E731
                                for g in sd["param_groups"]]
            assert strip(opt.state_dict()) == strip(opt_c.state_dict())
            torch.testing.assert_close(opt.state_dict()["state"], opt_c.state_dict()["state"])
        older = copy.deepcopy(opt.state_dict())
        for g in older["param_groups"]:
            for flag in not_og:
                g.pop(flag, None)
        opt.load_state_dict(older)
        opt.step()
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
        torch.testing.assert_close(loaded["state"], opt.state_dict()["state"])
        nontensor = copy.deepcopy(opt.state_dict())
        for s in nontensor["state"].values():
            s["step"] = s["step"].item()
        opt.load_state_dict(nontensor)
        opt.step()


def check_hooks_and_copies(torch_name):
    """State-dict and load hooks (pre, post, prepend), step hooks, deepcopy, printing, and a
    non-empty state after one step."""
    cls = adapter(torch_name)
    for kw in covered(torch_name):
        p = torch.rand(2, 3, requires_grad=True)
        opt = cls([p], **kw)
        repr(opt)
        opt.register_state_dict_pre_hook(lambda o: o.state.__setitem__("test", 1))
        assert opt.state_dict()["state"]["test"] == 1
        opt.state.pop("test")
        opt = cls([p], **kw)
        sd = opt.state_dict()
        opt.register_load_state_dict_pre_hook(
            lambda o, s: s["param_groups"][0].__setitem__("lr", 0.002))
        opt.load_state_dict(sd)
        assert opt.param_groups[0]["lr"] == 0.002

        def hook2(o, s):
            s = copy.deepcopy(s)
            s["param_groups"][0]["lr"] = 0.003
            return s

        opt.register_load_state_dict_pre_hook(hook2, prepend=True)
        opt.load_state_dict(sd)
        assert opt.param_groups[0]["lr"] == 0.002
        ran = []
        opt.register_load_state_dict_post_hook(lambda o, ran=ran: ran.append(True))
        opt.load_state_dict(opt.state_dict())
        assert ran == [True]
        data = []
        handle = opt.register_step_pre_hook(lambda o, a, k, data=data: data.append(1))
        opt.register_step_post_hook(lambda o, a, k, data=data: data.append(2))
        p.grad = torch.rand_like(p)
        opt.step()
        handle.remove()
        opt.step()
        assert data == [1, 2, 2] and all(len(s) > 0 for s in opt.state.values())
        public = lambda o: {k for k in o.__dict__ if not k.startswith("_")}  # noqa: E731
        assert public(opt) == public(copy.deepcopy(opt))


CHECKS = {
    "errors": check_errors,
    "right_direction": check_goes_right_direction,
    "right_direction_noncontiguous_lrsched": functools.partial(
        check_goes_right_direction, contiguous=False, with_lrsched=True),
    "tensor_lr": check_tensor_lr,
    "complex": check_complex,
    "complex_2d": check_complex_2d,
    "foreach_matches_forloop": check_foreach_matches_forloop,
    "param_groups": check_param_groups,
    "noops": check_noops,
    "state_dicts": check_state_dicts,
    "hooks_and_copies": check_hooks_and_copies,
}
#: the default run: every check on Adam (the most configurations), sparse on both optimizers
#: that take sparse gradients with a short run, and the error inputs of every optimizer
DEFAULT = {("Adam", c) for c in CHECKS} | {(n, "errors") for n in TORCH_NAMES} | \
    {("SGD", "complex"), ("Adagrad", "state_dicts")}
CASES = [pytest.param(n, c, marks=() if (n, c) in DEFAULT else pytest.mark.slow, id=f"{n}-{c}")
         for n in TORCH_NAMES for c in CHECKS]


@pytest.mark.parametrize(("torch_name", "check"), CASES)
def test_torch_protocol(torch_name, check):
    torch.manual_seed(0)
    CHECKS[check](torch_name)


@pytest.mark.parametrize("torch_name", ["SGD", "Adagrad"])
def test_rosenbrock_sparse_short(torch_name):
    check_sparse(torch_name, steps=200)


@pytest.mark.slow
@pytest.mark.parametrize("torch_name", ["SGD", "Adagrad"])
def test_rosenbrock_sparse_full(torch_name):
    check_sparse(torch_name)


def test_configurations_without_a_design_are_the_listed_ones():
    missing = set()
    for name in TORCH_NAMES:
        for kw in configs(name):
            try:
                _design(name, dict(kw))
            except UnsupportedError as error:
                missing.add(str(error).split(":")[0])
    assert missing == {"RMSprop(centered=True)", "AdamW(amsgrad=True)"}
    assert missing <= set(DIFFERENCES)
