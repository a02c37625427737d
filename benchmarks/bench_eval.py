"""`make bench-eval`: training throughput of the evaluation engine against a plain PyTorch loop.

Same process, same model (copies of one initialisation), same data, same device, same epochs and
batch size. The baseline is the loop a researcher writes first: a TensorDataset behind a
shuffling DataLoader, fp32, a host-to-device copy per batch and `loss.item()` every step. The
engine (`shared.evaluation.trainloop.train_model`) keeps the data on the device, draws batches by index,
syncs with the host once per epoch, uses channels_last for image batches, and on CUDA bf16
autocast. Rounds
alternate (baseline, engine, baseline, engine, ...) so drift on a shared machine hits both;
each figure is the median over rounds of samples per second.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.evaluation.trainloop import TrainSettings, pick_device, train_model


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes))


def cifar_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10-shaped inputs whose labels a CNN can learn (a fixed random projection), so both
    loops do real optimisation work rather than fitting noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 32, 32), dtype=np.float32)
    w = rng.standard_normal((3 * 32 * 32, 10), dtype=np.float32)
    y = (x.reshape(n, -1) @ w).argmax(1).astype(np.int64)
    return x, y


def plain_loop(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, batch: int, lr: float,
               device: torch.device) -> float:
    """-> samples per second of the hand-written baseline."""
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=batch, shuffle=True)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started, seen = time.perf_counter(), 0
    for _ in range(epochs):
        model.train()
        running = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(yb)
            seen += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - started)


def engine_loop(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, batch: int, lr: float,
                device: torch.device, compile_model: bool) -> float:
    settings = TrainSettings(epochs=epochs, batch_size=batch, lr=lr, optimizer="adam", weight_decay=0.0, seed=0,
                             track_val_each_epoch=False, compile=compile_model)
    out = train_model(model, x, y, x[:256], settings, device)
    return out.samples_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine's model")
    args = parser.parse_args()
    device = pick_device(args.device)
    x, y = cifar_like(args.samples)
    torch.manual_seed(0)
    reference = small_cnn()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"small CNN on CIFAR-shaped data: {args.samples} samples, {args.epochs} epochs, batch {args.batch_size}, "
          f"device {device} ({name}), torch {torch.__version__}")
    # one untimed warm-up of each loop: first-call costs (allocator, kernels, compile) are not throughput
    plain_loop(copy.deepcopy(reference), x[:512], y[:512], 1, args.batch_size, 1e-3, device)
    engine_loop(copy.deepcopy(reference), x[:512], y[:512], 1, args.batch_size, 1e-3, device, args.compile)
    plain, engine = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(copy.deepcopy(reference), x, y, args.epochs, args.batch_size, 1e-3, device))
        engine.append(engine_loop(copy.deepcopy(reference), x, y, args.epochs, args.batch_size, 1e-3, device, args.compile))
    p, e = statistics.median(plain), statistics.median(engine)
    print(f"plain loop (DataLoader, fp32): {p:10.0f} samples/s   rounds: {', '.join(f'{v:.0f}' for v in plain)}")
    print(f"engine                       : {e:10.0f} samples/s   rounds: {', '.join(f'{v:.0f}' for v in engine)}")
    target = 2.0 if device.type == "cuda" else 1.0
    print(f"ratio engine/plain: {e / p:.2f}x (target on {device.type}: >= {target:g}x: {'met' if e / p >= target else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
