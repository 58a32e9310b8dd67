"""Regenerate the figures (and print the numbers) of docs/scaling.md, docs/dynamics.md and
docs/adamssm.md: ``python docs/figures/make_figures.py [scaling|dynamics|adamssm ...]``.
The experiment figures come from ``python -m ctopt.experiments``."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import ctopt  # noqa: E402
from ctopt import dynamics  # noqa: E402
from ctopt.scaling import validate_sqrt_rule  # noqa: E402

HERE = Path(__file__).parent


def scaling():
    settings = [("adam", {"lr": 1e-3, "beta1": 0.99, "beta2": 0.999}),
                ("rmsprop", {"lr": 1e-3, "alpha": 0.999})]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True, constrained_layout=True)
    print("| design | kappa | distance, rule | distance, unscaled | seed noise | paired noise |")
    print("|---|---|---|---|---|---|")
    for row, (name, values) in enumerate(settings):
        for col, kappa in enumerate((4, 16)):
            r = validate_sqrt_rule(ctopt.zoo.get(name), kappa, values, samples=6400, seeds=8,
                                   checkpoints=40)
            print(f"| {name} | {kappa} | {r.distance_rule:.3f} | {r.distance_unscaled:.3f} | "
                  f"{r.seed_noise:.3f} | {r.paired_noise:.3f} |")
            ax = axes[row, col]
            for label, curve in r.curves.items():
                text = {"base": "batch 1", "rule": f"batch {kappa}, sqrt rule",
                        "unscaled": f"batch {kappa}, same hyperparameters"}[label]
                m, s = curve.mean(0), curve.std(0)
                line, = ax.plot(r.samples_seen, m, label=text)
                ax.fill_between(r.samples_seen, m - s, m + s, alpha=0.2, color=line.get_color())
            ax.set(title=f"{name}, kappa = {kappa}", ylabel="log10 excess risk")
            ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("samples seen")
    fig.savefig(HERE / "scaling_rule.png", dpi=80)


def dynamics_figures():
    lrs = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)
    fig, ax = plt.subplots(figsize=(4.5, 3.4), constrained_layout=True)
    for b1, b2 in ((0.9, 0.99), (0.9, 0.999)):
        d = dynamics.signgd_limit(lrs, beta1=b1, beta2=b2)
        print(f"signGD limit beta=({b1}, {b2}):", {k: round(v, 4) for k, v in d.items()})
        ax.loglog(list(d), list(d.values()), "o-", label=f"Adam, betas ({b1}, {b2})")
    ax.set(xlabel="lr", ylabel="max |x_k - x_flow(k lr)|", title="Adam -> signGD flow")
    ax.legend(fontsize=8)
    fig.savefig(HERE / "signgd_limit.png", dpi=80)

    a = b = np.geomspace(0.5, 100, 9)
    colors = {"converging": 0, "oscillating": 1, "spiking": 2, "diverging": 3}
    cmap = matplotlib.colors.ListedColormap(["#4c9a2a", "#f2b134", "#d1495b", "#222222"])
    problems = [dynamics.quadratic(100.0), dynamics.rosenbrock(), dynamics.mlp()]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), constrained_layout=True)
    for ax, problem in zip(axes, problems, strict=True):
        pm = dynamics.phase_map(a, b, eta=1e-2, steps=3000, problem=problem)
        print(problem.name, pm.counts())
        print(pm)
        codes = np.vectorize(colors.get)(pm.regimes)
        ax.imshow(codes, origin="lower", cmap=cmap, vmin=0, vmax=3)
        ticks = range(0, len(a), 2)
        ax.set_xticks(list(ticks), [f"{a[i]:.3g}" for i in ticks])
        ax.set_yticks(list(ticks), [f"{b[i]:.3g}" for i in ticks])
        ax.set(xlabel="a  (beta2 = 1 - a*eta)", ylabel="b  (beta1 = 1 - b*eta)", title=problem.name)
    handles = [matplotlib.patches.Patch(color=cmap(i), label=r) for r, i in colors.items()]
    axes[-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.savefig(HERE / "phase_map.png", dpi=80)
    regimes()


def regimes():
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), constrained_layout=True)
    p = dynamics.quadratic(100.0)
    for ax, (a_, b_) in zip(axes, ((1.0, 1.0), (0.5, 50.0), (50.0, 0.5)), strict=True):
        t = dynamics.run(ctopt.zoo.get("adam"), p, 3000, lr=1e-2, beta1=1 - b_ * 1e-2,
                              beta2=1 - a_ * 1e-2)
        ax.semilogy(np.maximum(t.loss, 1e-30))  # clipped for display
        ax.set(title=f"a={a_:g}, b={b_:g}: {t.regime}", xlabel="step", ylabel="loss")
    fig.savefig(HERE / "regimes.png", dpi=80)


def adamssm():
    from ctopt.experiments.__main__ import STUDY_PAIRS
    from ctopt.experiments.study import filter_check, impulse_response

    fig, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    for p, q in ((0.9, 0.9), (0.9, 0.99), (0.5, 0.99), (0.99, 0.9)):
        h = impulse_response(p, q, 0.999, 3000)
        label = "Adam (pole = zero)" if p == q else f"pole {p}, zero {q}"
        ax.semilogy(np.arange(1, 3001), h, label=label)
    ax.set(xlabel="k", ylabel="h[k-1]", title="g**2 -> v impulse response, beta2 = 0.999")
    ax.legend(fontsize=8)
    fig.savefig(HERE / "adamssm_impulse.png", dpi=80)

    poles = np.array([p for p, _ in STUDY_PAIRS])
    zeros = np.array([q for _, q in STUDY_PAIRS])
    problems = [dynamics.quadratic(100.0), dynamics.rosenbrock(), dynamics.mlp()]
    runs = {pr.name: dynamics.run_batch(ctopt.zoo.get("adamssm"), pr, 3000, lr=1e-2,
                                             pole=poles, zero=zeros) for pr in problems}
    print("| pole | zero | h[0] | mean delay | h >= 0 | " +
          " | ".join(f"{pr.name}: regime, final loss" for pr in problems) + " |")
    print("|---" * (5 + len(problems)) + "|")
    for i, (p, q) in enumerate(STUDY_PAIRS):
        c = filter_check(p, q)
        cells = [f"{dynamics.classify(runs[pr.name].loss[i])}, {runs[pr.name].loss[i, -1]:.2g}"
                 for pr in problems]
        print(f"| {p} | {q} | {c['h0']:.4g} | {c['mean_delay']:.0f} | {c['nonnegative']} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    jobs = {"scaling": scaling, "dynamics": dynamics_figures, "regimes": regimes,
            "adamssm": adamssm}
    for name in sys.argv[1:] or list(jobs):
        jobs[name]()
