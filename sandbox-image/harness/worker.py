"""Untrusted half of the in-container harness: loads generated code and measures or trains it.

Runs as its own process under the supervisor. Imports torch first and signals readiness, so a
pre-started container pays the import before its job arrives. Writes one JSON result to the
result fd; a failure of the generated code is a result (reason, exception, message), not a crash.
"""

import io
import json
import os
import sys
import time
import traceback

RESULT_FD, READY_FD = int(sys.argv[1]), int(sys.argv[2])
CODE_FILENAME = "model_code.py"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

os.write(READY_FD, b"R")
os.close(READY_FD)


def _finish(payload):
    payload["harness"] = "done"
    data = json.dumps(payload).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(RESULT_FD, view):]
    os.close(RESULT_FD)


def _fail(reason, error, exc=None):
    payload = {"ok": False, "reason": reason, "error": error}
    if exc is not None:
        payload["exception_type"] = type(exc).__name__
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == CODE_FILENAME]
        payload["traceback"] = "".join(traceback.format_list(frames[-5:]))
        if frames:
            payload["error"] += f" (model_code.py line {frames[-1].lineno})"
    return payload


def _read_job():
    job = json.loads(sys.stdin.buffer.readline())
    size = int.from_bytes(sys.stdin.buffer.read(8), "big")
    blob = sys.stdin.buffer.read(size) if size else b""
    return job, blob


def _load_model(job):
    """-> (model, None) or (None, failure payload)."""
    source = job["source"]
    try:
        code = compile(source, CODE_FILENAME, "exec")
    except SyntaxError as exc:
        return None, _fail("syntax", f"syntax error at line {exc.lineno}: {exc.msg}", None)
    namespace = {"__name__": "model_code"}
    try:
        exec(code, namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from the code included
        return None, _fail("exception", f"{type(exc).__name__} while importing the code: {exc}", exc)
    cls = namespace.get(job["class_name"])
    if cls is None:
        found = sorted(k for k, v in namespace.items() if isinstance(v, type) and issubclass(v, nn.Module))
        hint = f"; nn.Module classes defined: {', '.join(found)}" if found else "; it defines no nn.Module class"
        return None, _fail("class_not_found", f"class {job['class_name']!r} not found{hint}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None, _fail("not_a_module", f"{job['class_name']!r} is not a torch.nn.Module subclass")
    try:
        return cls(), None
    except BaseException as exc:
        return None, _fail("exception", f"{type(exc).__name__} in {job['class_name']}.__init__: {exc}", exc)


def _layers(model, limit=200):
    rows = []
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            rows.append({"name": name, "type": type(module).__name__,
                         "params": sum(p.numel() for p in module.parameters(recurse=False))})
            if len(rows) >= limit:
                break
    return rows


def validate(job):
    model, failure = _load_model(job)
    if failure:
        return failure
    torch.manual_seed(0)
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.randn(*job["input_shape"]))
    except BaseException as exc:
        return _fail("exception", f"{type(exc).__name__} in forward on input {tuple(job['input_shape'])}: {exc}", exc)
    if not isinstance(output, torch.Tensor):
        return _fail("bad_output", f"forward returned {type(output).__name__}, expected a tensor")
    return {
        "ok": True,
        "output_shape": list(output.shape),
        "param_count": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "layers": _layers(model),
    }


def _optimizer(name, params, lr, weight_decay):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train(job, blob):
    """Train on (X_train, y_train); return class probabilities for X_val. No labels for X_val here."""
    arrays = np.load(io.BytesIO(blob), allow_pickle=False)
    seed = int(job["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    model, failure = _load_model(job)
    if failure:
        return failure
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x_train = torch.from_numpy(arrays["x_train"]).to(device, non_blocking=True)
    y_train = torch.from_numpy(arrays["y_train"]).to(device, non_blocking=True)
    x_val = torch.from_numpy(arrays["x_val"]).to(device, non_blocking=True)
    hp = job["hparams"]
    batch, n = int(hp["batch_size"]), x_train.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    curve, started = [], time.perf_counter()
    try:
        model = model.to(device)
        optimizer = _optimizer(hp["optimizer"], model.parameters(), float(hp["lr"]), float(hp["weight_decay"]))
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(1, int(hp["epochs"]) + 1):
            model.train()
            order = torch.randperm(n, generator=generator).to(device)
            total_loss, correct = torch.zeros((), device=device), torch.zeros((), device=device)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                if idx.numel() < 2 and n > 1:  # a lone sample breaks BatchNorm in training mode
                    continue
                logits = model(x_train[idx])
                loss = loss_fn(logits, y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.detach() * idx.numel()
                correct += (logits.detach().argmax(1) == y_train[idx]).sum()
            loss_value = float(total_loss) / n
            if not np.isfinite(loss_value):
                return _fail("diverged", f"training loss became {loss_value} at epoch {epoch}")
            curve.append({"epoch": epoch, "train_loss": loss_value, "train_accuracy": float(correct) / n})
        model.eval()
        with torch.no_grad():
            probs = torch.cat([torch.softmax(model(x_val[s:s + 1024]).float(), 1)
                               for s in range(0, x_val.shape[0], 1024)])
    except BaseException as exc:
        return _fail("exception", f"{type(exc).__name__} during training: {exc}", exc)
    probs = probs.cpu().numpy().astype(np.float32)
    import base64
    return {"ok": True, "probs_b64": base64.b64encode(probs.tobytes()).decode(), "probs_shape": list(probs.shape),
            "curve": curve, "train_time_s": time.perf_counter() - started, "device": str(device)}


def main():
    job, blob = _read_job()
    torch.set_num_threads(max(1, int(job.get("threads", 1))))
    result = validate(job) if job["mode"] == "validate" else train(job, blob)
    _finish(result)


main()
