"""The training loop of the evaluation engine: one seed, data already in memory.

One loop, two uses: in-process on a researcher's own (trusted) model through
`shared.evaluation.quick_eval`, and inside the locked-down container on generated code, where the build
copies this file next to the harness. So it imports torch and numpy only, and it never sees
validation labels: it returns class probabilities for the validation inputs (after every epoch
when learning curves are tracked) and the trusted side computes every metric from them.

Speed: the whole data set stays as tensors on the training device (no DataLoader, no per-batch
host-to-device copies, no per-step host syncs: the epoch's loss and accuracy accumulate on the
device), batches are drawn by index from a seeded permutation; on CUDA, bf16 autocast and
channels_last for image batches (CPU too), and torch.compile as an option.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

PREDICT_BATCH = 1024


@dataclass(frozen=True)
class TrainSettings:
    # ---- the recipe: no defaults here, every caller passes a TrainingRecipe's (shared.messaging.messages:
    # this file is also copied into the sandbox image, where the library is not) ----
    epochs: int
    batch_size: int
    lr: float
    optimizer: str  # adam | adamw | sgd
    weight_decay: float
    seed: int = 0
    track_val_each_epoch: bool = True  # probabilities for x_val after every epoch, for learning curves
    track_gradient_norms: bool = False
    mixed_precision: bool = True  # bf16 autocast where the device supports it (CUDA)
    channels_last: bool = True  # for 4-D (image) inputs
    compile: bool = False  # torch.compile the model first (worth it for long runs only)
    augment: bool = False  # image batches: random crop (4-pixel padding) and horizontal flip, on the device
    class_weights: bool = False  # the loss weighs each class by n / (n_classes * its count) in y_train


@dataclass
class TrainOutput:
    curve: list[dict[str, float]]  # per epoch: epoch, train_loss, train_accuracy[, grad_norm]
    val_probs: np.ndarray  # (N_val, C) float32 after the last epoch
    val_probs_per_epoch: list[np.ndarray] = field(default_factory=list)  # when tracked
    train_time_s: float = 0.0
    samples_per_s: float = 0.0
    device: str = "cpu"
    failure: dict[str, Any] | None = None  # {"reason", "error"} when training diverged
    setup_time_s: float = 0.0  # data and model onto the device, the optimizer built: before the first epoch
    predict_time_s: float = 0.0  # the final predictions, after train_time_s
    # bytes: torch's allocator high-water mark over the call, on CUDA (None elsewhere); the caching
    # allocator reserves more, and nvidia-smi adds the CUDA context (benchmarks/gpu_check.py compares them)
    peak_gpu_memory_bytes: int | None = None


def pick_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use adam, adamw or sgd")


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard light augmentation for small images, drawn from the seed's generator: a random
    crop of the zero-padded batch (one offset per batch) and a horizontal flip of a random half."""
    n, _, h, w = x.shape
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = padded[:, :, dy:dy + h, dx:dx + w]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def balanced_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" class weights from the training labels: n / (n_present * count) for
    each class present in `y`, 1 for a class the model outputs but `y` lacks (it never enters the loss).
    (num_classes,) float32 on y's device."""
    counts = torch.bincount(y.long(), minlength=num_classes)[:num_classes].float()
    present = int((counts > 0).sum())
    weights = y.numel() / (max(present, 1) * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.ones_like(weights))


def _predict(model: nn.Module, x: torch.Tensor, autocast) -> np.ndarray:
    model.eval()
    with torch.no_grad(), autocast():
        probs = torch.cat([torch.softmax(model(x[s:s + PREDICT_BATCH]).float(), 1) for s in range(0, x.shape[0], PREDICT_BATCH)])
    return probs.cpu().numpy().astype(np.float32)


def train_model(model: nn.Module, x_train: np.ndarray | torch.Tensor, y_train: np.ndarray | torch.Tensor,
                x_val: np.ndarray | torch.Tensor, settings: TrainSettings, device: torch.device | None = None) -> TrainOutput:
    """Train `model` in place on (x_train, y_train); predict x_val. Exceptions from the model propagate."""
    entered = time.perf_counter()
    device = device or pick_device()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    x_tr = torch.as_tensor(x_train).to(device, non_blocking=True)
    y_tr = torch.as_tensor(y_train).to(device, non_blocking=True)
    x_va = torch.as_tensor(x_val).to(device, non_blocking=True)
    # channels_last for image batches on any device: measured +15% training throughput on this
    # machine's CPU (oneDNN convolutions), and the layout tensor cores want on CUDA
    memory_format = torch.channels_last if (settings.channels_last and x_tr.dim() == 4) else torch.contiguous_format
    if memory_format is torch.channels_last:
        x_tr, x_va = x_tr.contiguous(memory_format=memory_format), x_va.contiguous(memory_format=memory_format)
    model = model.to(device, memory_format=memory_format)
    if settings.compile:
        model = torch.compile(model)
    use_bf16 = cuda and settings.mixed_precision and torch.cuda.is_bf16_supported()

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16) if cuda else torch.autocast("cpu", enabled=False)

    optimizer = _optimizer(settings.optimizer, model.parameters(), settings.lr, settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    n, batch = x_tr.shape[0], max(1, int(settings.batch_size))
    curve: list[dict[str, float]] = []
    per_epoch: list[np.ndarray] = []
    seen = 0
    if cuda:
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device, non_blocking=True)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        grad_total = torch.zeros((), device=device)
        steps = 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            if idx.numel() < 2 and n > 1:  # a lone sample breaks BatchNorm in training mode
                continue
            xb, yb = x_tr[idx], y_tr[idx]
            if settings.augment and xb.dim() == 4:
                xb = augment_batch(xb, generator)
            with autocast():
                logits = model(xb)
                if settings.class_weights and loss_fn.weight is None:  # the model's class count is known only now
                    loss_fn = nn.CrossEntropyLoss(weight=balanced_weights(y_tr, logits.shape[1]))
                loss = loss_fn(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.track_gradient_norms:
                grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
                if grads:
                    grad_total += torch.stack(grads).pow(2).sum().sqrt()
            optimizer.step()
            total_loss += loss.detach() * idx.numel()
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += idx.numel()
            steps += 1
        loss_value = float(total_loss) / n  # one host sync per epoch
        if not math.isfinite(loss_value):
            return TrainOutput(curve, np.zeros((0, 0), np.float32), per_epoch, time.perf_counter() - started, 0.0, str(device),
                               failure={"reason": "diverged", "error": f"training loss became {loss_value} at epoch {epoch}"})
        point = {"epoch": epoch, "train_loss": loss_value, "train_accuracy": float(correct) / n}
        if settings.track_gradient_norms and steps:
            point["grad_norm"] = float(grad_total) / steps
        curve.append(point)
        if settings.track_val_each_epoch and epoch < settings.epochs:
            per_epoch.append(_predict(model, x_va, autocast))
    if cuda:
        torch.cuda.synchronize(device)
    train_time = time.perf_counter() - started
    probs = _predict(model, x_va, autocast)
    if settings.track_val_each_epoch:
        per_epoch.append(probs)
    return TrainOutput(curve, probs, per_epoch, train_time, seen / train_time if train_time > 0 else 0.0, str(device),
                       setup_time_s=started - entered, predict_time_s=time.perf_counter() - started - train_time,
                       peak_gpu_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if cuda else None)
