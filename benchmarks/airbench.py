"""A fast CIFAR-10 network after airbench's public design (KellerJordan/airbench, `airbench94.py`:
94% on CIFAR-10 in 2.59 s on an A100), written here from that design, and its own reference
training loop, for the GPU check (`benchmarks/gpu_check.py`) to train against the engine.

The network: a 2x2 "whitening" convolution (24 channels, bias) initialised from the eigenvectors
of the training images' 2x2 patches, GELU, then three groups of (3x3 conv, 2x2 max-pool,
BatchNorm, GELU, 3x3 conv, BatchNorm, GELU) of widths 64, 256 and 256, a 3x3 max-pool, and a
bias-free linear head scaled by 1/9. BatchNorm keeps fast running statistics (airbench's
momentum 0.6, torch's 0.4) and a frozen scale, so only its bias learns.

The reference loop keeps airbench's training recipe: the whole set on the device in channels_last,
Nesterov SGD (momentum 0.85) with airbench's decoupled learning rate and weight decay, the
BatchNorm biases at 64 times the rate, label smoothing 0.2 summed over the batch, a linear
warm-up then decay, random flips and 2-pixel translations, bf16 autocast on CUDA. Left out, as
the engine has no counterpart: lookahead (EMA of weights), test-time augmentation, progressive
freezing of the whitening bias, alternating flips and torch.compile (the check compiles the
engine's run separately).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (64, 256, 256)
WHITEN_WIDTH = 24  # 2 * (3 channels * 2 * 2 pixels): each eigenvector and its negation
BATCH_SIZE = 1024
LR, MOMENTUM, WEIGHT_DECAY, BIAS_SCALER = 11.5, 0.85, 0.0153, 64.0  # airbench94's hyperparameters
LABEL_SMOOTHING = 0.2


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-12, momentum=0.4)  # airbench's 0.6 in its own convention
        self.weight.requires_grad = False  # a frozen scale of 1: only the bias learns


class ConvGroup(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1, self.norm2 = BatchNorm(channels_out), BatchNorm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """(B, 3, 32, 32) -> (B, 10) logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.whiten = nn.Conv2d(3, WHITEN_WIDTH, 2, padding=0, bias=True)
        self.body = nn.Sequential(nn.GELU(), ConvGroup(WHITEN_WIDTH, WIDTHS[0]), ConvGroup(WIDTHS[0], WIDTHS[1]),
                                  ConvGroup(WIDTHS[1], WIDTHS[2]), nn.MaxPool2d(3), nn.Flatten())
        self.head = nn.Linear(WIDTHS[2], num_classes, bias=False)
        for module in self.modules():  # airbench's identity ("dirac") start for the 3x3 convolutions
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                w = module.weight.data
                nn.init.dirac_(w[:w.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.whiten(x))) / 9

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """The first layer's filters from the 2x2 patches of `x` (B, 3, 32, 32): each eigenvector of
        their covariance scaled by 1/sqrt(eigenvalue), and its negation, so its output is white."""
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 3, 2, 2)  # (P, 3, 2, 2)
        flat = patches.reshape(len(patches), -1)
        flat = flat - flat.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / len(flat))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, 3, 2, 2).flip(0)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))


@dataclass
class ReferenceRun:
    samples_per_s: float
    train_time_s: float  # seconds, CUDA synchronised
    val_accuracy: float


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and 2-pixel translations (reflect padding), drawn per batch."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    dy, dx = (int(v) for v in torch.randint(0, 5, (2,), generator=generator))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def reference_train(model: AirbenchNet, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    epochs: int, device: torch.device, batch_size: int = BATCH_SIZE, seed: int = 0) -> ReferenceRun:
    """airbench's own loop (module docstring) on `model`, in place."""
    cuda = device.type == "cuda"
    x = torch.as_tensor(x_train).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.as_tensor(y_train).to(device)
    x_va = torch.as_tensor(x_val).to(device).contiguous(memory_format=torch.channels_last)
    model = model.to(device, memory_format=torch.channels_last)
    model.init_whitening(x[:5000])
    kilostep_scale = 1024 * (1 + 1 / (1 - MOMENTUM))  # airbench's decoupled form of lr and weight decay
    lr, wd = LR / kilostep_scale, WEIGHT_DECAY * batch_size / kilostep_scale
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in model.named_parameters() if "norm" not in n and p.requires_grad]
    optimizer = torch.optim.SGD([{"params": norm_biases, "lr": lr * BIAS_SCALER, "weight_decay": wd / BIAS_SCALER},
                                 {"params": others, "lr": lr, "weight_decay": wd}], momentum=MOMENTUM, nesterov=True)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    steps_per_epoch = max(1, len(x) // batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, int(0.23 * total))

    def schedule(step: int) -> float:  # linear up to 1, then down to 0.07
        return step / warmup if step < warmup else 1 - 0.93 * (step - warmup) / max(1, total - warmup)

    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING, reduction="sum")
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)  # noqa: E731
    if cuda:
        torch.cuda.synchronize(device)
    started, step = time.perf_counter(), 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            idx = order[start:start + batch_size]
            with autocast():
                loss = loss_fn(model(_augment(x[idx], generator)).float(), y[idx])
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * schedule(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad(), autocast():
        predicted = torch.cat([model(x_va[s:s + 2048]).argmax(1) for s in range(0, len(x_va), 2048)])
    accuracy = float((predicted.cpu().numpy() == y_val).mean())
    return ReferenceRun(samples_per_s=step * batch_size / seconds if seconds > 0 else math.nan, train_time_s=seconds,
                        val_accuracy=accuracy)
