"""Character-level language modelling with a small LSTM on the Python standard library's
docstrings, gathered at run time from the installed sources with :mod:`ast` (nothing is imported
or downloaded). Every tenth 1000-character chunk is held out for validation; the metric is
validation perplexity per character (lower is better). The corpus depends on the Python version.

Example:
    >>> text = stdlib_docstrings(20_000)
    >>> len(text) >= 20_000
    True
"""

from __future__ import annotations

import ast
import string
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from .harness import RunCurves

__all__ = ["LanguageTask", "stdlib_docstrings"]

_SKIP = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__",
         "turtledemo", "ensurepip", "config-3"}
ALPHABET = string.printable  # any other character becomes "~"


def stdlib_docstrings(limit: int) -> str:
    """At least ``limit`` characters (if available) of module, class and function docstrings
    from the standard library's source files, in sorted file order.

    Example:
        >>> text = stdlib_docstrings(2000)
        >>> len(text) >= 2000
        True
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if _SKIP & set(path.relative_to(root).parts[:-1]) or path.name.startswith("test_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(doc)
                    total += len(doc) + 2
        if total >= limit:
            break
    return "\n\n".join(parts)


@dataclass
class LanguageTask:
    """A one-layer character LSTM; ``train(make, lr, seed)`` returns :class:`RunCurves`
    (evaluated every ``eval_every`` steps on the held-out chunks). Gradients are clipped to norm
    ``clip`` for every optimizer."""

    chars: int = 300_000
    steps: int = 250
    hidden: int = 64
    embed: int = 32
    seq: int = 32
    batch: int = 16
    eval_every: int = 50
    clip: float = 1.0
    threads: int = 1
    name: str = "language"
    metric: str = "val perplexity"
    higher_is_better: bool = False
    _cache: tuple = field(default=(), repr=False)

    @classmethod
    def big(cls) -> LanguageTask:
        """The bigger run: 1.5M characters (most of the corpus: about 1.6M on Python 3.11),
        hidden 256, batches of 32 sequences of 64, 3000 steps."""
        return cls(chars=1_500_000, steps=3000, hidden=256, seq=64, batch=32, eval_every=250)

    def data(self):
        """``(train, validation)`` as 1-D long tensors of character indices."""
        import torch

        if not self._cache:
            if self.chars < 10_000:
                raise ValueError(f"chars must be >= 10000 (one validation chunk in ten), got {self.chars}")
            text = stdlib_docstrings(self.chars)[: self.chars]
            lookup = {c: i for i, c in enumerate(ALPHABET + "~")}
            ids = torch.tensor([lookup.get(c, len(ALPHABET)) for c in text], dtype=torch.long)
            chunks = ids.split(1000)
            val = torch.cat([c for i, c in enumerate(chunks) if i % 10 == 9])
            train = torch.cat([c for i, c in enumerate(chunks) if i % 10 != 9])
            self._cache = (train, val)
        return self._cache

    def train(self, make, lr: float, seed: int) -> RunCurves:
        import math

        import torch
        import torch.nn.functional as F
        from torch import nn

        torch.set_num_threads(self.threads)
        train, val = self.data()
        vocab = len(ALPHABET) + 1
        torch.manual_seed(seed)
        emb, lstm = nn.Embedding(vocab, self.embed), nn.LSTM(self.embed, self.hidden, batch_first=True)
        head = nn.Linear(self.hidden, vocab)
        params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
        opt = make(params, lr)
        gen = torch.Generator().manual_seed(seed)
        n_val = min(len(val) // (self.seq + 1), 8 * self.batch)
        val_x = val[: n_val * (self.seq + 1)].view(n_val, self.seq + 1)

        def loss_of(x):
            out, _ = lstm(emb(x[:, :-1]))
            return F.cross_entropy(head(out).reshape(-1, vocab), x[:, 1:].reshape(-1))

        out = RunCurves([], [], [], [])
        total, count = 0.0, 0
        offsets = torch.arange(self.seq + 1)
        for step in range(1, self.steps + 1):
            starts = torch.randint(0, len(train) - self.seq - 1, (self.batch,), generator=gen)
            opt.zero_grad()
            loss = loss_of(train[starts[:, None] + offsets])
            loss.backward()
            nn.utils.clip_grad_norm_(params, self.clip)
            opt.step()
            total, count = total + float(loss.detach()), count + 1
            if step % self.eval_every == 0 or step == self.steps:
                with torch.no_grad():
                    v = float(loss_of(val_x))
                out.steps.append(step)
                out.train_loss.append(total / count)
                out.val_loss.append(v)
                out.val_metric.append(math.exp(v) if v < 50 else float("inf"))
                total, count = 0.0, 0
        return out
