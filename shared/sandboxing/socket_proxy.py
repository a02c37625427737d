"""The Docker socket proxy: a unix socket that forwards to the engine's only the calls
socket_policy.Policy passes, and answers every other with 403 and a JSON {"message": ...}.

Each request on a client's connection is parsed (h11) and judged on its own, so a keep-alive
connection cannot carry a second, unchecked request; each goes to the engine on a connection of
its own, re-framed by h11, so no bytes the proxy did not parse reach the engine's HTTP parser.
Only an attach the engine answers with 101 turns the client's connection into a raw stream,
and that stream goes to the container's stdin, not to the engine's parser.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from typing import Any

import h11
import structlog

from shared.errors import RefusedCall
from shared.sandboxing.socket_policy import MAX_BODY_BYTES, Call, Policy, owned, redacted

CHUNK = 1 << 16  # bytes read at a time
log = structlog.get_logger()


class SocketProxy:
    """Listens on `listen` (a unix socket, made `mode`, group `gid` when given) and forwards to
    the engine at `upstream`. `start()` serves from a thread; `close()` stops and removes the socket."""

    def __init__(self, listen: str, upstream: str, policy: Policy, *, mode: int = 0o660, gid: int | None = None) -> None:
        self.listen, self.upstream, self.policy, self.mode, self.gid = listen, upstream, policy, mode, gid
        self._server: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> None:
        if os.path.exists(self.listen):  # a socket a previous proxy left behind
            os.unlink(self.listen)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.listen)
        if self.gid is not None:
            os.chown(self.listen, -1, self.gid)
        os.chmod(self.listen, self.mode)
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, name="docker-proxy", daemon=True).start()
        log.info("docker_proxy_listening", listen=self.listen, upstream=self.upstream, images=sorted(self.policy.images))

    def close(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            _shutdown(client)
        if os.path.exists(self.listen):
            os.unlink(self.listen)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()  # type: ignore[union-attr]
            except OSError:
                return
            with self._lock:
                self._clients.add(client)
            threading.Thread(target=self._serve, args=(client,), name="docker-proxy-client", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while self._one_request(client, conn):
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError) as exc:
            log.debug("docker_proxy_connection_ended", error=str(exc))
        finally:
            with self._lock:
                self._clients.discard(client)
            _shutdown(client)

    def _one_request(self, client: socket.socket, conn: h11.Connection) -> bool:
        """Serve one request -> whether the connection may carry another."""
        request, body = _read_request(client, conn)
        if request is None:
            return False
        method, target = request.method.decode("ascii"), request.target.decode("ascii")
        try:
            call = self.policy.check(method, target, body)
            container_id = self._owned_container(call) if call.container else None
        except RefusedCall as exc:
            log.warning("docker_call_refused", method=method, target=target, why=exc.why)
            _answer(client, conn, 403, {"message": str(exc)})
            return conn.our_state is h11.DONE and conn.their_state is h11.DONE
        except _Foreign as foreign:  # another's container: its redacted inspect only
            _answer(client, conn, 200, redacted(foreign.inspect))
            return conn.our_state is h11.DONE and conn.their_state is h11.DONE
        log.debug("docker_call", method=method, target=target)
        headers = [(name, value) for name, value in request.headers
                   if name not in (b"content-length", b"transfer-encoding", b"host")]
        return self._forward(client, conn, call.method, call.target(container_id), headers, call.body)

    def _owned_container(self, call: Call) -> str:
        """The full id of the container `call` acts on, when it carries the owner label."""
        status, inspect = self._request("GET", f"{call.prefix}/containers/{call.container}/json")
        if status == 404:
            raise RefusedCall(call.method, call.path, f"no such container: {call.container}")
        if status != 200 or not isinstance(inspect, dict):
            raise RefusedCall(call.method, call.path, f"the engine did not say whose container {call.container} is (HTTP {status})")
        if owned(inspect):
            return str(inspect["Id"])
        if call.foreign_inspect:
            raise _Foreign(inspect)
        raise RefusedCall(call.method, call.path, f"container {call.container} is not a sandbox container (it lacks "
                          "the label org.pytorch-researcher.owner); the proxy acts only on those")

    def _request(self, method: str, target: str) -> tuple[int, Any]:
        """A bodiless call of the proxy's own on the engine -> (status, the decoded JSON answer)."""
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream)
            conn = h11.Connection(h11.CLIENT)
            upstream.sendall(conn.send(h11.Request(method=method, target=target, headers=[("Host", "docker")])))
            upstream.sendall(conn.send(h11.EndOfMessage()))
            status, body = 0, bytearray()
            while True:
                event = _next_event(upstream, conn)
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            try:
                return status, json.loads(body) if body else None
            except ValueError:
                return status, None
        finally:
            upstream.close()

    def _forward(self, client: socket.socket, conn: h11.Connection, method: str, target: str,
                 headers: list, body: bytes) -> bool:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream)
            up = h11.Connection(h11.CLIENT)
            length = [(b"content-length", str(len(body)).encode())] if body or method in ("POST", "PUT") else []
            upstream.sendall(up.send(h11.Request(method=method, target=target, headers=[(b"host", b"docker"), *headers, *length])))
            if body:
                upstream.sendall(up.send(h11.Data(data=body)))
            upstream.sendall(up.send(h11.EndOfMessage()))
            while True:
                event = _next_event(upstream, up)
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    client.sendall(conn.send(h11.InformationalResponse(status_code=101, headers=event.headers, reason=event.reason)))
                    _splice(client, conn.trailing_data[0], upstream, up.trailing_data[0])
                    return False
                if isinstance(event, (h11.Response, h11.Data)):
                    client.sendall(conn.send(event))
                elif isinstance(event, h11.EndOfMessage):
                    client.sendall(conn.send(h11.EndOfMessage()))
                    return conn.our_state is h11.DONE and conn.their_state is h11.DONE
                elif isinstance(event, h11.ConnectionClosed):
                    return False
        finally:
            upstream.close()


class _Foreign(Exception):
    def __init__(self, inspect: dict) -> None:
        self.inspect = inspect


def _next_event(sock: socket.socket, conn: h11.Connection):
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(sock.recv(CHUNK))


def _read_request(client: socket.socket, conn: h11.Connection) -> tuple[h11.Request | None, bytes]:
    """The next request and its whole body (at most MAX_BODY_BYTES), or (None, b"") at its end."""
    request, body = None, bytearray()
    while True:
        event = _next_event(client, conn)
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                _answer(client, conn, 413, {"message": f"the Docker socket proxy refused a body over {MAX_BODY_BYTES:,} bytes"})
                return None, b""
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
            return None, b""


def _answer(client: socket.socket, conn: h11.Connection, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    if conn.their_state is not h11.DONE:  # a body cut short: the connection cannot carry another request
        headers.append(("Connection", "close"))
    client.sendall(conn.send(h11.Response(status_code=status, headers=headers)))
    client.sendall(conn.send(h11.Data(data=data)))
    client.sendall(conn.send(h11.EndOfMessage()))


def _splice(client: socket.socket, from_client: bytes, upstream: socket.socket, from_upstream: bytes) -> None:
    """An attach's raw stream, both ways, until both sides have closed theirs."""
    if from_client:
        upstream.sendall(from_client)
    if from_upstream:
        client.sendall(from_upstream)
    peers = {client: upstream, upstream: client}
    open_ = {client, upstream}
    while open_:
        readable, _, _ = select.select(list(open_), [], [])
        for sock in readable:
            try:
                data = sock.recv(CHUNK)
            except OSError:
                data = b""
            if data:
                try:
                    peers[sock].sendall(data)
                    continue
                except OSError:
                    pass
            open_.discard(sock)  # its side ended: pass the end on
            try:
                peers[sock].shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
