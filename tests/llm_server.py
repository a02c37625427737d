"""A real OpenAI-compatible HTTP server for the tests, with scripted replies.

It speaks the chat-completions wire format the `openai` client expects (POST /v1/chat/completions,
GET /v1/models), on 127.0.0.1 and a free port, from a thread of the test process, so services
running as subprocesses reach it like any local model server. Replies are queued per model name;
when a model's queue is empty its fallback answers (HTTP 500 unless a test sets one).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    content: str | None = None  # the assistant message; a dict or list is sent as its JSON
    status: int = 200  # anything else sends an OpenAI-style error body with this status
    delay_s: float = 0.0  # sleep before answering (a client timeout shorter than this times out)
    finish_reason: str = "stop"
    refusal: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(value: Any, **kwargs: Any) -> Reply:
    return Reply(content=json.dumps(value), **kwargs)


@dataclass
class Seen:
    """One request the server answered: the model asked for, its messages, and the reply it got."""

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    status: int
    authorization: str = ""

    @property
    def text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages)


class ScriptedLLM:
    def __init__(self) -> None:
        self._queues: dict[str, deque[Reply]] = {}
        self._fallbacks: dict[str, Callable[[dict], Reply]] = {}
        self._refused: dict[str, Reply] = {}  # response_format type -> the error it gets
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, model: str, *replies: Reply | str | dict) -> None:
        """Queue replies for `model`, answered in order (a str is the content, a dict its JSON)."""
        with self._lock:
            queue = self._queues.setdefault(model, deque())
            for r in replies:
                queue.append(r if isinstance(r, Reply) else json_reply(r) if isinstance(r, dict) else Reply(content=r))

    def fallback(self, model: str, answer: Callable[[dict], Reply]) -> None:
        """How `model` answers once its queue is empty: a function of the request body."""
        self._fallbacks[model] = answer

    def refuse(self, *formats: str, status: int = 400, message: str = "") -> None:
        """Refuse every request whose response_format has one of these types, as servers that do
        not support them do, without taking a scripted reply."""
        for kind in formats:
            self._refused[kind] = Reply(status=status, content=message or f"response_format type {kind!r} is not supported")

    def seen(self, model: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if s.model == model]

    def __enter__(self) -> "ScriptedLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, body: dict) -> Reply:
        model = str(body.get("model", ""))
        form = body.get("response_format")
        if isinstance(form, dict) and form.get("type") in self._refused:
            return self._refused[form["type"]]
        with self._lock:
            queue = self._queues.get(model)
            if queue:
                return queue.popleft()
        answer = self._fallbacks.get(model)
        return answer(body) if answer else Reply(status=500, content=f"no scripted reply left for model {model!r}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet: pytest shows failures
                pass

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    models = sorted(set(server._queues) | set(server._fallbacks))
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "tests"} for m in models]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "request body is not JSON", "type": "invalid_request_error"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                reply = server._next(body)
                with server._lock:
                    server.requests.append(Seen(model=str(body.get("model")), messages=body.get("messages", []),
                                                body=body, status=reply.status,
                                                authorization=self.headers.get("Authorization", "")))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": reply.content or f"HTTP {reply.status}",
                                                        "type": "server_error", "code": None}}, reply.headers)
                    return
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                content = reply.content if isinstance(reply.content, (str, type(None))) else json.dumps(reply.content)
                self._send(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                 "message": {"role": "assistant", "content": content, "refusal": reply.refusal}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len((content or "").split()),
                              "total_tokens": prompt_tokens + len((content or "").split())},
                }, reply.headers)

        return Handler


class NotAnAPI:
    """A web server where an API should be (a base URL missing /v1, say): every request, GET or
    POST, is answered 200 with an HTML page, which no OpenAI client can use."""

    PAGE = b"<html><body><h1>It works!</h1></body></html>"

    def __init__(self) -> None:
        page = self.PAGE

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _page(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            do_GET = do_POST = _page

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="not-an-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "NotAnAPI":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
