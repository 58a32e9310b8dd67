"""Image classification on scikit-learn's bundled 8x8 digits with a small CNN.

1797 images, a fixed stratified 80/20 train/validation split; the metric is validation accuracy.
Needs the ``experiments`` extra (scikit-learn). Default size: 10 epochs of a two-layer CNN
(about a second per run on one CPU thread); ``big=True`` trains a wider CNN for 40 epochs.

Example:
    >>> model = DigitsTask().model()
    >>> sum(p.numel() for p in model.parameters())
    6090
    >>> DigitsTask.big().epochs
    40
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .harness import RunCurves

__all__ = ["DigitsTask"]


def _data():
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xva, ytr, yva = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)

    def t(a, dtype):
        return torch.tensor(a, dtype=dtype)

    shape = (-1, 1, 8, 8)
    return (t(xtr / 16.0, torch.float32).reshape(shape), t(ytr, torch.long),
            t(xva / 16.0, torch.float32).reshape(shape), t(yva, torch.long))


@dataclass
class DigitsTask:
    """A small CNN on the digits; ``train(make, lr, seed)`` returns :class:`RunCurves` (one
    evaluation per epoch)."""

    epochs: int = 10
    batch: int = 32
    width: int = 16
    threads: int = 1
    name: str = "digits"
    metric: str = "val accuracy"
    higher_is_better: bool = True
    _cache: tuple = field(default=(), repr=False)

    @classmethod
    def big(cls) -> DigitsTask:
        """The bigger run: a CNN twice as wide, 40 epochs."""
        return cls(epochs=40, width=32)

    def model(self):
        from torch import nn

        w = self.width
        return nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * w, 10),
        )

    def train(self, make, lr: float, seed: int) -> RunCurves:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(self.threads)
        if not self._cache:
            self._cache = _data()
        xtr, ytr, xva, yva = self._cache
        torch.manual_seed(seed)
        model = self.model()
        opt = make(model.parameters(), lr)
        gen = torch.Generator().manual_seed(seed)
        out = RunCurves([], [], [], [])
        steps = 0
        for _ in range(self.epochs):
            model.train()
            total, count = 0.0, 0
            for idx in torch.randperm(len(xtr), generator=gen).split(self.batch):
                opt.zero_grad()
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                steps += 1
            model.eval()
            with torch.no_grad():
                logits = model(xva)
                val_loss = float(F.cross_entropy(logits, yva))
                acc = float((logits.argmax(1) == yva).float().mean())
            out.steps.append(steps)
            out.train_loss.append(total / count)
            out.val_loss.append(val_loss)
            out.val_metric.append(acc if val_loss == val_loss else float("nan"))
        return out
