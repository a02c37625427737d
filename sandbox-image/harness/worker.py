"""Untrusted half of the in-container harness: loads generated code and measures or trains it.

Two processes. The worker (this file's top level) imports torch (and, in a pooled container,
warms up the FLOP counter) and signals readiness, so a pre-started container pays that before its
job arrives; it never runs generated code.
For each job it forks a model process that drops the result pipe, runs the code, measures or
trains it, and reports over a pipe of its own; the worker then writes the one result the
supervisor reads, with how the model process ended (exit code, signal, the stage it reached).
The generated code therefore cannot write to the result pipe, and the trusted processes are
not dumpable, so it cannot ptrace them or open their file descriptors either.
"""

import base64
import ctypes
import io
import json
import os
import select
import shutil
import signal
import sys
import time
import traceback

RESULT_FD, READY_FD = int(sys.argv[1]), int(sys.argv[2])
CODE_FILENAME = "model_code.py"
MAX_REPORT_BYTES = 512 * 1024 * 1024
PR_SET_DUMPABLE = 4

try:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
except (OSError, AttributeError):
    pass

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the harness's folder out
from trainloop import TrainSettings, train_model  # noqa: E402  (shared/evaluation/trainloop.py, copied by the build)

def _forget_inductor_cache():
    """Importing the counter's dependencies makes /tmp/torchinductor_<user> and sets
    TORCHINDUCTOR_CACHE_DIR: undo both, so the code gets the tmpfs's every inode and the
    environment the runner gave it."""
    path = os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    if path and os.path.realpath(path).startswith("/tmp/"):
        shutil.rmtree(path, ignore_errors=True)


# The counter's first use imports torch._dynamo (~0.7 s, ~70 MB). A pooled validation container
# pays it before its job arrives, like torch's import; a cold one pays it only if it validates, and
# training containers never do.
if os.environ.pop("HARNESS_WARM_FLOPS", "0") == "1":
    try:
        with FlopCounterMode(display=False):
            torch.empty(0)  # any dispatched op; no compute, so no thread pool starts before the fork
    except Exception:  # noqa: BLE001 - a counter that cannot start only costs the FLOPs figure
        pass
    _forget_inductor_cache()

# A training job's optimizer imports torch._dynamo on its first call (torch wraps the optimizer's
# methods in _disable_dynamo, which imports it lazily): ~1.3 s of CPU, measured as most of a cheap
# job's time outside training. A pooled training container pays it before its job arrives. Only an
# optimizer is built: no compute, so no thread pool starts before the fork.
if os.environ.pop("HARNESS_WARM_TRAIN", "0") == "1":
    try:
        torch.optim.Adam([nn.Parameter(torch.zeros(1))])
    except Exception:  # noqa: BLE001 - a warm-up that fails only costs the job the import
        pass
    _forget_inductor_cache()

os.write(READY_FD, b"R")
os.close(READY_FD)


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


def _load_model(job, stage):
    """-> (model, None) or (None, failure payload)."""
    source = job["source"]
    try:
        code = compile(source, CODE_FILENAME, "exec")
    except SyntaxError as exc:
        return None, _fail("syntax", f"syntax error at line {exc.lineno}: {exc.msg}", None)
    namespace = {"__name__": "model_code"}
    stage("import")
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
    stage("init")
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


def _probe_input(job):
    """The probe batch: standard normal floats, or for token ids (input_dtype "int64") ids in
    [1, vocab_size) with trailing padding (id 0) of a different length per row, as a text data
    set's batches have, so a model that mishandles the mask meets it here."""
    shape = [int(d) for d in job["input_shape"]]
    if job.get("input_dtype", "float32") != "int64":
        return torch.randn(*shape)
    ids = torch.randint(1, max(2, int(job.get("vocab_size", 0))), shape)
    if len(shape) == 2 and shape[1] > 1:
        lengths = torch.linspace(shape[1], max(1, shape[1] // 2), shape[0]).long()  # full to half
        ids[torch.arange(shape[1]) >= lengths[:, None]] = 0
    return ids


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    """CPU attention's fused kernel, which torch's counter leaves out: QK^T and the weighted sum,
    2 * B * H * Lq * Lk * (E + Ev)."""
    b, h, lq, e = query_shape
    ev = value_shape[-1]
    return 2 * b * h * lq * key_shape[-2] * (e + ev)


def _flop_mapping():
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_flops} if op is not None else {}


def _counted_forward(model, x):
    """One forward pass under FlopCounterMode -> (output, FLOPs or None). Should the counting
    break the pass (an op the counter cannot handle), the pass runs again uncounted, so only the
    code's own errors decide the verdict. Transformer layers' inference fast path is one fused op
    the counter cannot see into, so the counted pass runs the ordinary path (the same figures)."""
    fastpath = getattr(torch.backends, "mha", None)
    before = fastpath.get_fastpath_enabled() if fastpath else None
    try:
        if fastpath:
            fastpath.set_fastpath_enabled(False)
        with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
            output = model(x)
    except BaseException:  # noqa: BLE001 - the code's own error raises again below
        return model(x), None
    finally:
        if fastpath:
            fastpath.set_fastpath_enabled(before)
    try:
        flops = int(counter.get_total_flops())
    except Exception:  # noqa: BLE001
        flops = None
    _forget_inductor_cache()  # a cold container imported the counter's dependencies just now
    return output, flops


def validate(job, stage):
    model, failure = _load_model(job, stage)
    if failure:
        return failure
    torch.manual_seed(0)
    stage("forward")
    try:
        model.eval()
        with torch.no_grad():
            output, flops = _counted_forward(model, _probe_input(job))
    except BaseException as exc:
        return _fail("exception", f"{type(exc).__name__} in forward on input {tuple(job['input_shape'])}: {exc}", exc)
    if not isinstance(output, torch.Tensor):
        return _fail("bad_output", f"forward returned {type(output).__name__}, expected a tensor")
    return {
        "ok": True,
        "output_shape": [int(d) for d in output.shape],
        "param_count": int(sum(p.numel() for p in model.parameters())),
        "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "layers": _layers(model),
        "flops": flops,  # one forward pass of the probe batch; a matmul counts 2*M*N*K
    }


def _b64(array):
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _weights(model, max_bytes):
    """The trained state dict as safetensors bytes (base64), or why not: never fails the seed.
    Only when the job asks (max_weights_bytes > 0), so an older trusted side gets the report it
    always had. The trusted side decodes them strictly: they come from the code's process."""
    try:
        from safetensors.torch import save  # imported here: a validation never pays for it

        state = model.state_dict()
        size = sum(t.numel() * t.element_size() for t in state.values())  # before any copy: memory is capped here
        if size > max_bytes:
            return {"weights_error": f"the trained weights hold {size:,} bytes, over the limit of {max_bytes:,} "
                                     "(evaluator.max_weights_bytes)"}
        # clones: tied parameters would otherwise be refused as shared memory
        data = save({name: t.detach().cpu().contiguous().clone() for name, t in state.items()})
        if len(data) > max_bytes:  # the header counts too, as the trusted side counts it
            return {"weights_error": f"the weights file holds {len(data):,} bytes, over the limit of {max_bytes:,} "
                                     "(evaluator.max_weights_bytes)"}
    except BaseException as exc:  # noqa: BLE001 - the code's state dict may be anything
        return {"weights_error": f"{type(exc).__name__} while saving the weights: {exc}"[:500]}
    return {"weights_b64": base64.b64encode(data).decode()}


def train(job, blob, stage):
    """Train on (x_train, y_train); return class probabilities for x_val (after every epoch when
    learning curves are tracked). There are no labels for x_val in here."""
    began = time.monotonic()
    arrays = np.load(io.BytesIO(blob), allow_pickle=False)
    seed = int(job["seed"])
    torch.manual_seed(seed)  # the model's initialisation is part of the seed
    np.random.seed(seed)
    model, failure = _load_model(job, stage)
    if failure:
        return failure
    stage("train")
    built = time.monotonic()
    hp = job["hparams"]
    settings = TrainSettings(epochs=int(hp["epochs"]), batch_size=int(hp["batch_size"]), lr=float(hp["lr"]),
                             optimizer=str(hp["optimizer"]), weight_decay=float(hp["weight_decay"]), seed=seed,
                             track_val_each_epoch=bool(job.get("track_learning_curves", True)),
                             track_gradient_norms=bool(job.get("track_gradient_norms", False)),
                             compile=bool(job.get("compile", False)), augment=bool(job.get("augment", False)),
                             class_weights=bool(job.get("class_weights", False)))
    try:
        out = train_model(model, arrays["x_train"], arrays["y_train"], arrays["x_val"], settings)
    except BaseException as exc:
        return _fail("exception", f"{type(exc).__name__} during training: {exc}", exc)
    if out.failure:
        return {"ok": False, **out.failure}
    trained = time.monotonic()
    result = {"ok": True, "probs_b64": _b64(out.val_probs), "probs_shape": list(out.val_probs.shape), "curve": out.curve,
              "train_time_s": out.train_time_s, "samples_per_s": out.samples_per_s, "device": out.device}
    if out.val_probs_per_epoch:
        epochs = np.stack(out.val_probs_per_epoch).astype(np.float16)
        result.update(epoch_probs_b64=_b64(epochs), epoch_probs_shape=list(epochs.shape))
    max_weights = int(job.get("max_weights_bytes", 0))
    if max_weights > 0:
        result.update(_weights(model, max_weights))
    # seconds, as this process saw them: the container's claim, shown beside the trusted side's clock
    result["timings"] = {"code_s": built - began, "setup_s": out.setup_time_s, "predict_s": out.predict_time_s,
                         "encode_s": time.monotonic() - trained}
    return result


def model_process(job, blob, report_w, token):
    """The forked child: the only process that runs generated code. Never returns."""
    os.close(RESULT_FD)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    def send(message):
        data = json.dumps(message).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(report_w, view):]

    try:
        torch.set_num_threads(max(1, int(job.get("threads", 1))))
        stage = lambda name: send({"stage": name})  # noqa: E731
        result = validate(job, stage) if job["mode"] == "validate" else train(job, blob, stage)
        send({"final": result, "token": token})
    except BaseException as exc:  # noqa: BLE001 - a harness failure is still a report
        try:
            send({"final": _fail("harness", f"{type(exc).__name__} in the harness: {exc}"), "token": token})
        except BaseException:  # noqa: BLE001
            pass
    for stream in (sys.stdout, sys.stderr):  # os._exit skips the flush of what the code printed
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


STAGES = ("import", "init", "forward", "train", "predict")
# The trusted side rejects longer strings (shared/sandboxing/protocol.py): an exception message of
# any size from the code is cut here, head and tail kept, so it stays a plain "exception".
MAX_TEXT = {"error": 4000, "traceback": 4000, "reason": 64, "exception_type": 200, "weights_error": 1000}


def _bounded(final):
    for key, cap in MAX_TEXT.items():
        text = final.get(key)
        if isinstance(text, str) and len(text) > cap:
            cut = len(text) - cap
            final[key] = text[: cap // 2] + f" [... {cut} characters cut ...] " + text[-(cap // 2) :]
    return final


def _write_result_line(message):
    data = json.dumps(message).encode() + b"\n"
    view = memoryview(data)
    while view:
        view = view[os.write(RESULT_FD, view):]


def collect(pid, fd):
    """Read the model process's reports until it exits, passing each stage it reaches on to the
    supervisor as it happens (so a timeout can say where the code was).
    -> (raw bytes, wait status, overflow, the last stage reached)."""
    buf, status, overflow, scanned, stage = bytearray(), None, False, 0, "start"

    def take(chunk):
        nonlocal scanned, stage
        buf.extend(chunk)
        while (end := buf.find(b"\n", scanned)) >= 0:
            line, scanned = bytes(buf[scanned:end]), end + 1
            if len(line) < 64 and line.startswith(b'{"stage": "'):
                name = line[11:-2].decode("ascii", "replace")
                # forward only, once each: the code could send stage lines without end
                if name in STAGES and (stage not in STAGES or STAGES.index(name) > STAGES.index(stage)):
                    stage = name
                    _write_result_line({"stage": name})

    while status is None:
        readable, _, _ = select.select([fd], [], [], 0.05)
        if readable:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            take(chunk)
            if len(buf) > MAX_REPORT_BYTES:
                overflow = True
                os.kill(pid, signal.SIGKILL)
                break
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            status = wait_status
            os.set_blocking(fd, False)  # take what it wrote before it ended; processes it left may hold the pipe
            while len(buf) <= MAX_REPORT_BYTES:
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                take(chunk)
    if status is None:
        _, status = os.waitpid(pid, 0)
    return bytes(buf), status, overflow, stage


def interpret(raw, status, overflow, token, stage):
    final = None
    for line in raw.split(b"\n"):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("token") == token and isinstance(message.get("final"), dict):
            final = _bounded(message["final"])
            break
    process = {"stage": stage, "report_overflow": overflow,
               "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
               "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}
    return final, process


def main():
    job, blob = _read_job()
    token = os.urandom(16).hex()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        model_process(job, blob, report_w, token)
    os.close(report_w)
    raw, status, overflow, stage = collect(pid, report_r)
    final, process = interpret(raw, status, overflow, token, stage)
    _write_result_line({"harness": "done", "result": final, "process": process})
    os.close(RESULT_FD)
    os._exit(0)  # skip the interpreter's teardown of torch: it costs ~0.4 s of every validation


main()
