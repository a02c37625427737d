"""Trusted half of the in-container harness. It never imports or runs generated code.

Container stdout belongs to this process alone: the worker (which runs the generated code)
gets pipes for its output and for its result, so nothing the code prints can pose as the
harness's result. Protocol on stdin: one JSON header line {"nonce", "job", "blob_len",
"max_output_bytes"}, then blob_len bytes of data (npz). On stdout: "@@READY" once the worker has
imported torch, then a single "@@RESULT <nonce> <json>" line before exit.
"""

import json
import os
import subprocess
import sys
import threading

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
MAX_RESULT_BYTES = 512 * 1024 * 1024  # predictions of a large validation split, base64


def _drain_tail(stream, cap, sink):
    """Keep the last `cap` bytes of the worker's stdout+stderr; count what was dropped."""
    buf, dropped = bytearray(), 0
    for chunk in iter(lambda: stream.read1(65536), b""):
        buf += chunk
        if len(buf) > cap:
            dropped += len(buf) - cap
            del buf[: len(buf) - cap]
    sink["tail"], sink["dropped"] = bytes(buf), dropped


def _read_all(fd, cap, sink):
    chunks, size = [], 0
    with os.fdopen(fd, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            size += len(chunk)
            if size > cap:
                sink["overflow"] = True
                break
            chunks.append(chunk)
    sink["data"] = b"".join(chunks)


def main():
    out = sys.stdout
    result_r, result_w = os.pipe()
    ready_r, ready_w = os.pipe()
    worker = subprocess.Popen(
        [sys.executable, "-I", WORKER, str(result_w), str(ready_w)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(result_w, ready_w),
        close_fds=True,
    )
    os.close(result_w)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        if ready.read(1) == b"R":
            out.write("@@READY\n")
            out.flush()

    header = json.loads(sys.stdin.buffer.readline())
    blob = sys.stdin.buffer.read(int(header.get("blob_len", 0)))
    cap = int(header.get("max_output_bytes", 65536))

    output, result = {}, {}
    drain = threading.Thread(target=_drain_tail, args=(worker.stdout, cap, output), daemon=True)
    collect = threading.Thread(target=_read_all, args=(result_r, MAX_RESULT_BYTES, result), daemon=True)
    drain.start()
    collect.start()
    try:
        worker.stdin.write(json.dumps(header["job"]).encode() + b"\n")
        worker.stdin.write(len(blob).to_bytes(8, "big") + blob)
        worker.stdin.close()
    except BrokenPipeError:  # the worker died before reading its job
        pass
    code = worker.wait()
    collect.join()
    drain.join(timeout=5)

    parsed, harness_completed = None, False
    if not result.get("overflow") and result.get("data"):
        try:
            parsed = json.loads(result["data"])
            harness_completed = isinstance(parsed, dict) and parsed.get("harness") == "done"
        except ValueError:
            parsed = None
    report = {
        "harness_completed": harness_completed,
        "result": parsed if harness_completed else None,
        "exit_code": code,
        "result_overflow": bool(result.get("overflow")),
        "output_tail": output.get("tail", b"").decode("utf-8", "replace"),
        "output_dropped_bytes": output.get("dropped", 0),
    }
    out.write("@@RESULT " + header["nonce"] + " " + json.dumps(report) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
