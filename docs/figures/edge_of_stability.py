"""The adaptive edge of stability on scikit-learn's digits (docs/edge_of_stability.md).

``python docs/figures/edge_of_stability.py`` runs the lab (about 14 full-batch runs of 3000
steps; a few CPU-minutes), writes ``data/edge_of_stability.json`` and the figure, and prints the
table of late ratios. ``--plot`` redraws the figure from the committed data only.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
DATA = HERE / "data" / "edge_of_stability.json"
STEPS, EVERY, LATE = 3000, 100, 1500

RUNS = (
    [("adam", "mlp", {"lr": lr, "betas": (b1, 0.999)}, None)
     for b1 in (0.9, 0.8) for lr in (0.003, 0.01, 0.03)]
    + [("adam", "mlp2", {"lr": lr}, None) for lr in (0.003, 0.01, 0.03)]
    + [("adamssm", "mlp", {"lr": 0.01}, None), ("adan", "mlp", {"lr": 0.01}, None),
       ("qhadam", "mlp", {"lr": 0.003}, None)]
    + [("adam", "mlp", {"lr": 0.01}, 32), ("adam", "mlp", {"lr": 0.01}, 128)]
)


def run_all() -> list[dict]:
    from ctopt.experiments.edge import edge_run, late_ratios

    out = []
    print(f"| optimizer | arch | hyperparameters | batch | critical (kind) | late ratio "
          f"min / median / max (steps >= {LATE}) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, arch, hyper, batch in RUNS:
        r = edge_run(name, arch=arch, steps=STEPS, every=EVERY, batch=batch, **hyper)
        lo, med, hi = late_ratios(r, LATE)
        row = {**r.as_dict(), "late": [lo, med, hi]}
        out.append(row)
        print(f"| {name} | {arch} | {hyper} | {batch or 'full'} | {r.critical:.1f} ({r.kind}) "
              f"| {lo:.3f} / {med:.3f} / {hi:.3f} | {r.seconds:.1f} |", flush=True)
    DATA.write_text(json.dumps(out, indent=1))
    return out


def plot(rows: list[dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    ax = axes[0]
    for row in rows:
        if row["optimizer"] == "adam" and row["arch"] == "mlp" and row["batch"] is None \
                and tuple(row["hyper"].get("betas", (0.9,)))[0] == 0.9:
            steps = [h[0] for h in row["history"]]
            line, = ax.semilogy(steps, [h[1] for h in row["history"]], marker=".",
                                label=f"lr = {row['hyper']['lr']}")
            ax.axhline(row["critical"], color=line.get_color(), linestyle="--", linewidth=1)
    ax.set(xlabel="step", ylabel=r"$\lambda_{\max}(D^{-1}H)$",
           title="Adam, full batch, 64-64-10 MLP (dashed: 38/lr)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for row in rows:
        label = None
        if row["optimizer"] != "adam" and row["batch"] is None:
            label = f"{row['optimizer']}, lr = {row['hyper']['lr']}"
        elif row["batch"] is not None:
            label = f"adam, batch {row['batch']}"
        elif row["arch"] == "mlp2" and row["hyper"]["lr"] == 0.01:
            label = "adam, 64-32-32-10 MLP"
        if label:
            steps = [h[0] for h in row["history"]]
            ax.plot(steps, [h[1] / row["critical"] for h in row["history"]], marker=".",
                    label=label)
    ax.axhline(1.0, color="k", linestyle="--", linewidth=1, label="ctopt's threshold")
    ax.set(xlabel="step", ylabel="sharpness / critical sharpness",
           title="other designs, another architecture, mini-batches")
    ax.legend(fontsize=7)
    fig.savefig(HERE / "edge_of_stability.png", dpi=80)


if __name__ == "__main__":
    rows = json.loads(DATA.read_text()) if "--plot" in sys.argv else run_all()
    plot(rows)
