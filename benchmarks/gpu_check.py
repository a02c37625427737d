"""`make gpu-check` (scripts/gpu-check.sh): the engine's CUDA path measured on a bare GPU machine,
in one call of under 8 minutes, as a table.

Steps, each in its own Python process with its own timeout, so a hang, a CUDA error or a missing
package costs one row, never the table:
  bench-eval    the engine against a plain PyTorch loop (benchmarks/bench_eval.py on the device)
  airbench      airbench's network (benchmarks/airbench.py) trained by its own reference loop and by
                the engine (bf16 autocast, channels_last; then torch.compile), on random data of
                CIFAR-10's shape whose labels a network can learn
  gpu-figures   the seconds and peak GPU memory the engine reports (TrainOutput) against
                torch.cuda's counters, the synchronised wall clock and nvidia-smi's figure for
                this process
  quick-eval    quick-evaluator end to end on the device (digits, 2 seeds), as a user runs it

`--device cpu` runs every step at tiny sizes so the script itself is tested without a GPU
(tests/unit/test_gpu_check.py); the CUDA-only figures then read "n/a" with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW_PREFIX = "GPU_CHECK_ROW "  # a step's last line: its figures as JSON

# ---- sizes: (samples, epochs) per step and device; CPU sizes only prove the script runs ----
SIZES = {
    "cuda": {"bench_samples": 16384, "bench_epochs": 3, "bench_rounds": 3, "air_samples": 50000, "air_epochs": 4,
             "air_val": 10000, "air_batch": 1024, "quick_epochs": 3, "quick_subset": 0},
    "cpu": {"bench_samples": 256, "bench_epochs": 1, "bench_rounds": 1, "air_samples": 128, "air_epochs": 1,
            "air_val": 64, "air_batch": 64, "quick_epochs": 1, "quick_subset": 300},
}
# seconds, on CUDA; 440 in all, inside scripts/gpu-check.sh's 470 and the 8 minutes of one device call
TIMEOUTS = {"bench-eval": 110, "airbench": 190, "gpu-figures": 60, "quick-eval": 80}


def _emit(**figures) -> None:
    print(ROW_PREFIX + json.dumps(figures), flush=True)


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        _emit(status="skipped", note=f"CUDA not available to torch {torch.__version__} (built for CUDA "
                                     f"{torch.version.cuda or 'none'}): no GPU figures")
        raise SystemExit(0)
    return torch.device(name)


def step_bench_eval(device: str, sizes: dict) -> None:
    if device == "cuda":
        _device(device)
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_eval", "--device", device, "--samples",
                          str(sizes["bench_samples"]), "--epochs", str(sizes["bench_epochs"]), "--rounds",
                          str(sizes["bench_rounds"])], capture_output=True, text=True, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) < 4:
        _emit(status="failed", note=(out.stderr.strip().splitlines() or ["no output"])[-1][:200])
        return
    plain, engine = (float(line.split(":")[1].split()[0]) for line in lines[-3:-1])
    _emit(status="ok", plain_samples_per_s=round(plain), engine_samples_per_s=round(engine),
          ratio=round(engine / plain, 2), note=lines[-1])


def step_airbench(device_name: str, sizes: dict) -> None:
    import torch

    from benchmarks.airbench import AirbenchNet, reference_train
    from benchmarks.bench_eval import cifar_like
    from shared.evaluation.trainloop import TrainSettings, train_model

    device = _device(device_name)
    n, n_val = sizes["air_samples"], sizes["air_val"]
    x, y = cifar_like(n + n_val, seed=1)
    x_train, y_train, x_val, y_val = x[:n], y[:n], x[n:], y[n:]
    torch.manual_seed(0)
    reference = reference_train(AirbenchNet(), x_train, y_train, x_val, y_val, sizes["air_epochs"], device,
                                batch_size=sizes["air_batch"])
    figures = {"reference_samples_per_s": round(reference.samples_per_s), "reference_val_accuracy":
               round(reference.val_accuracy, 3), "reference_s": round(reference.train_time_s, 2)}
    for label, compile_model in (("engine", False), ("engine_compiled", device.type == "cuda")):
        if label == "engine_compiled" and not compile_model:
            figures[label] = "n/a on cpu (compiled only on CUDA)"
            continue
        torch.manual_seed(0)
        model = AirbenchNet()
        model.init_whitening(torch.as_tensor(x_train[:5000]))
        settings = TrainSettings(epochs=sizes["air_epochs"], batch_size=sizes["air_batch"], lr=0.05, optimizer="sgd",
                                 weight_decay=5e-4, seed=0, track_val_each_epoch=False, augment=True,
                                 compile=compile_model)
        started = time.perf_counter()
        out = train_model(model, x_train, y_train, x_val, settings, device)
        if out.failure:
            figures[label] = f"failed: {out.failure['error']}"
            continue
        figures[f"{label}_samples_per_s"] = round(out.samples_per_s)
        figures[f"{label}_val_accuracy"] = round(float((out.val_probs.argmax(1) == y_val).mean()), 3)
        figures[f"{label}_s"] = round(out.train_time_s, 2)
        figures[f"{label}_call_s"] = round(time.perf_counter() - started, 2)  # compile time included
    engine = figures.get("engine_samples_per_s")
    _emit(status="ok" if engine else "failed", ratio=round(engine / reference.samples_per_s, 2) if engine else None,
          **figures)


def _nvidia_smi_used_mib() -> float | str:
    """This process's GPU memory as nvidia-smi sees it (MiB), or why it cannot say."""
    if not shutil.which("nvidia-smi"):
        return "n/a: nvidia-smi not found"
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return f"n/a: pid {os.getpid()} not listed (a container's pid namespace?): {out.stdout.strip()[:120]!r}"


def step_gpu_figures(device_name: str, sizes: dict) -> None:
    import torch

    from benchmarks.bench_eval import cifar_like, small_cnn
    from shared.evaluation.trainloop import TrainSettings, train_model

    device = _device(device_name)
    x, y = cifar_like(sizes["bench_samples"])
    settings = TrainSettings(epochs=sizes["bench_epochs"], batch_size=128, lr=1e-3, optimizer="adam", weight_decay=0.0,
                             track_val_each_epoch=False)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    out = train_model(small_cnn(), x, y, x[:1024], settings, device)
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    figures = {"engine_train_s": round(out.train_time_s, 3), "engine_setup_s": round(out.setup_time_s, 3),
               "engine_predict_s": round(out.predict_time_s, 3), "wall_s": round(wall, 3)}
    if cuda:
        mib = 1 << 20
        figures |= {"engine_peak_gpu_mib": round((out.peak_gpu_memory_bytes or 0) / mib, 1),
                    "torch_max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / mib, 1),
                    "torch_max_reserved_mib": round(torch.cuda.max_memory_reserved(device) / mib, 1),
                    "nvidia_smi_process_mib": _nvidia_smi_used_mib()}
    else:
        figures["gpu_memory"] = "n/a on cpu"
    _emit(status="ok", **figures)


def step_quick_eval(device: str, sizes: dict) -> None:
    if device == "cuda":
        _device(device)
    subset = ["--subset-size", str(sizes["quick_subset"])] if sizes["quick_subset"] else []
    out = subprocess.run([sys.executable, "-c", "import sys; from researcher.evaluate_cmd import quick_evaluator_main; "
                          "sys.exit(quick_evaluator_main(sys.argv[1:]))", "--dataset", "digits", "--device", device,
                          "--epochs", str(sizes["quick_epochs"]), "--num-seeds", "2", *subset, "--json"],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        _emit(status="failed", note=(out.stderr.strip().splitlines() or ["no output"])[-1][:200])
        return
    result = json.loads(out.stdout)
    devices = sorted({str(seed.get("device")) for seed in result["seed_results"]})
    accuracy = result["aggregated"]["val_accuracy"]
    _emit(status="ok" if all(d.startswith(device) for d in devices) else "failed", devices=devices,
          val_accuracy_mean=round(accuracy["mean"], 3), total_s=round(result["total_time_s"], 2))


STEPS = {"bench-eval": step_bench_eval, "airbench": step_airbench, "gpu-figures": step_gpu_figures,
         "quick-eval": step_quick_eval}


def run_step(name: str, device: str, timeout_s: float) -> dict:
    """One step in its own process: -> its row (status, seconds, figures)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--step", name, "--device", device],
                             capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"step": name, "status": "timeout", "seconds": round(time.perf_counter() - started, 1),
                "note": f"no answer within its {timeout_s:g} s"}
    seconds = round(time.perf_counter() - started, 1)
    rows = [line[len(ROW_PREFIX):] for line in out.stdout.splitlines() if line.startswith(ROW_PREFIX)]
    if not rows:  # the table gets the last line of the error; --json keeps its traceback
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"step": name, "status": "failed", "seconds": seconds, "note": f"exit {out.returncode}: {last[:200]}",
                "stderr_tail": out.stderr[-4000:]}
    return {"step": name, "seconds": seconds, **json.loads(rows[-1])}


def format_table(rows: list[dict]) -> str:
    lines = [f"{'step':<12} {'status':<8} {'seconds':>8}  figures", "-" * 100]
    for row in rows:
        figures = {k: v for k, v in row.items() if k not in ("step", "status", "seconds")}
        text = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "stderr_tail")
        lines.append(f"{row['step']:<12} {row['status']:<8} {row['seconds']:>8}  {text}")
    return "\n".join(lines)


def environment(device: str) -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"gpu-check on {device}: torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), {gpu}, "
            f"Python {sys.version.split()[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--step", choices=sorted(STEPS), help="run one step here (what the table's processes do)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.step:
        STEPS[args.step](args.device, SIZES[args.device])
        return 0
    print(environment(args.device), flush=True)
    # CPU sizes are tiny, but a loaded 2-core machine still needs room for the imports
    scale = 1.0 if args.device == "cuda" else 1.5
    rows = []
    for name in STEPS:
        rows.append(run_step(name, args.device, TIMEOUTS[name] * scale))
        print(f"  {name}: {rows[-1]['status']} in {rows[-1]['seconds']} s", flush=True)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if any(r["status"] not in ("ok", "skipped") for r in rows):
        return 1
    if any(r["status"] == "skipped" for r in rows):
        print("gpu-check: CUDA is not available here, so nothing was measured on a GPU; --device cpu checks the script")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
