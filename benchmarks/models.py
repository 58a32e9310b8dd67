"""Parameter lists of real model families, allocated by their torch modules (no downloads): the
optimizer benchmarks run on these as the models allocate them.

Example:
    >>> import models
    >>> ps = models.build("convnet")
    >>> len(ps), sum(p.numel() for p in ps) > 1_000_000
    (34, True)
"""

from __future__ import annotations

import torch
from torch import nn


def transformer(d: int = 384, layers: int = 6) -> nn.Module:
    """A transformer encoder (d = 384, 6 heads, feed-forward 4d)."""
    layer = nn.TransformerEncoderLayer(d, 6, 4 * d, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def convnet(width: int = 32) -> nn.Module:
    """A VGG-like convnet with batch norm: 8 conv + BN blocks and a linear head."""
    blocks, c = [], 3
    for i, out in enumerate([width, width, 2 * width, 2 * width, 4 * width, 4 * width,
                             8 * width, 8 * width]):
        blocks += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        if i % 2:
            blocks.append(nn.MaxPool2d(2))
        c = out
    blocks += [nn.Flatten(), nn.Linear(c * 4, 10)]
    return nn.Sequential(*blocks)


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, d: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(),
                                       nn.Linear(2 * tokens, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


def mixer(d: int = 256, tokens: int = 64, depth: int = 8) -> nn.Module:
    """An MLP-mixer-like stack: 8 blocks of token and channel MLPs with layer norms."""
    return nn.Sequential(*[MixerBlock(tokens, d) for _ in range(depth)])


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


def resnet(widths=(64, 128, 256, 512)) -> nn.Module:
    """ResNet-18-shaped: a 7x7 stem, four stages of two basic blocks, a 1000-way head."""
    layers = [nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    c = widths[0]
    for i, w in enumerate(widths):
        layers += [BasicBlock(c, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
        c = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000)]
    return nn.Sequential(*layers)


class GPTBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


def gpt2(d: int = 768, layers: int = 12, vocab: int = 50257, context: int = 1024) -> nn.Module:
    """GPT-2-small-shaped (124M parameters): token and position embeddings, 12 blocks, final
    layer norm (the output head is tied to the token embedding)."""
    model = nn.Module()
    model.wte, model.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
    model.h = nn.ModuleList([GPTBlock(d) for _ in range(layers)])
    model.ln_f = nn.LayerNorm(d)
    return model


def policy(obs: int = 17, hidden: int = 64, actions: int = 6) -> nn.Module:
    """A reinforcement-learning policy: a two-hidden-layer tanh MLP (MuJoCo-sized)."""
    return nn.Sequential(nn.Linear(obs, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                         nn.Tanh(), nn.Linear(hidden, actions))


def mlp(inputs: int = 784, hidden: int = 256, classes: int = 10) -> nn.Module:
    """An MNIST classifier: one hidden layer."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))


#: name -> (builder, builder of the smaller version used by ``--quick``)
MODELS = {
    "transformer": (transformer, lambda: transformer(192, 3)),
    "convnet": (convnet, lambda: convnet(16)),
    "mixer": (mixer, lambda: mixer(128, 32, 4)),
    "resnet": (resnet, lambda: resnet((32, 64, 128, 256))),
    "gpt2": (gpt2, lambda: gpt2(384, 4, 8192, 512)),
    # small models (table 7): the same at --quick
    "policy": (policy, policy),
    "mlp": (mlp, mlp),
    "smallconv": (lambda: convnet(16), lambda: convnet(16)),
}


def build(name: str, quick: bool = False, seed: int = 0) -> list[torch.nn.Parameter]:
    """The parameters of model ``name`` as its modules allocate them."""
    torch.manual_seed(seed)
    full, small = MODELS[name]
    return list((small if quick else full)().parameters())
