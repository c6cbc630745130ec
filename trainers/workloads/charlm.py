"""Built-in ``charlm``: a one-block causal transformer over characters of the stdlib's source.

The text is the source of a fixed list of pure-Python standard-library modules, read from the
running interpreter (so nothing is downloaded; the exact text follows the Python version). The
last 10% of the characters are the validation text. Adam, because a transformer trained with plain
SGD needs far more steps than a quick search can afford.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.nn import Parameter

from schedsearch.trainers.workloads.base import TensorWorkload, seeded

MODULES = (
    "textwrap",
    "heapq",
    "bisect",
    "fnmatch",
    "shlex",
    "string",
    "colorsys",
    "glob",
    "queue",
    "sched",
    "calendar",
    "fractions",
    "difflib",
)
CONTEXT = 32
VAL_FRACTION = 0.1
VAL_WINDOWS = 128  # evaluation is frequent (AutoLRS measures it every few steps): keep it small
# Vocabulary: 0 = any other character, 1 = newline, 2.. = printable ASCII 32..126.
VOCAB = 2 + 95


def encode(text: str) -> torch.Tensor:
    codes = [1 if c == "\n" else (ord(c) - 30 if 32 <= ord(c) <= 126 else 0) for c in text]
    return torch.tensor(codes, dtype=torch.long)


def stdlib_text(modules: Iterable[str] = MODULES) -> str:
    parts = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None or not origin.endswith(".py"):
            raise RuntimeError(
                f"charlm reads the source of the standard library module {name!r}, "
                "which this Python installation does not ship"
            )
        parts.append(Path(origin).read_text(encoding="utf-8"))
    return "\n".join(parts)


def windows(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows: inputs (N, CONTEXT) and next-character targets (N, CONTEXT)."""
    count = (len(codes) - 1) // CONTEXT
    starts = torch.arange(count) * CONTEXT
    index = starts[:, None] + torch.arange(CONTEXT + 1)[None, :]
    chunk = codes[index]
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


@functools.lru_cache(maxsize=1)
def charlm_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    codes = encode(stdlib_text())
    cut = int(len(codes) * (1 - VAL_FRACTION))
    x_train, y_train = windows(codes[:cut])
    x_val, y_val = windows(codes[cut:])
    return x_train, y_train, x_val[:VAL_WINDOWS], y_val[:VAL_WINDOWS]


class CharTransformer(nn.Module):
    """Embedding + learned positions, one pre-norm attention/MLP block, a linear head."""

    def __init__(self, vocab: int = VOCAB, context: int = CONTEXT, width: int = 64, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.02 * torch.randn(context, width))
        self.norm_attn = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.norm_out = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length = tokens.shape
        hidden = self.embed(tokens) + self.position[:length]
        qkv = self.qkv(self.norm_attn(hidden)).view(batch, length, 3, self.heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True)
        hidden = hidden + self.proj(attended.transpose(1, 2).reshape(batch, length, -1))
        hidden = hidden + self.mlp(self.norm_mlp(hidden))
        return self.head(self.norm_out(hidden))


class CharLM(TensorWorkload):
    """Next-character prediction, context 32, batch 32 (~65k parameters), Adam."""

    name = "charlm"
    default_lr = 3e-3
    default_steps = 2000
    batch_size = 32

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return charlm_split()

    def build_model(self, seed: int) -> nn.Module:
        with seeded(seed):
            return CharTransformer()

    def make_optimizer(self, params: Iterable[Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr)
