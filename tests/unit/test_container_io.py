"""A container's attach stream read over a real socket in docker's multiplexed framing: the ready
line, a result line read only once whole, the end of the stream, and the deadline."""

import socket
import struct
import time

import pytest

from shared.sandboxing.container_io import Attached


class Response:
    """What docker-py's attach_socket returns: the socket is its `_sock`."""

    def __init__(self, sock):
        self._sock = sock


def frame(payload: bytes, kind: int = 1) -> bytes:  # 1: stdout, 2: stderr
    return bytes([kind, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


@pytest.fixture
def stream():
    ours, theirs = socket.socketpair()
    yield Attached(None, Response(ours), time.monotonic(), cap=1024), theirs
    ours.close()
    theirs.close()


def test_a_result_line_is_read_only_once_whole(stream):
    warm, container = stream
    marker = b"@@RESULT abc "
    container.sendall(frame(b"@@READY\n"))
    assert warm.read(time.monotonic() + 5, until=b"@@READY\n")
    container.sendall(frame(b"@@STAGE abc train\n" + marker + b'{"result": 1') + frame(b"noise", 2))
    assert not warm.read(time.monotonic() + 0.2, until=marker, line=True)  # the line has not ended
    container.sendall(frame(b', "more": 2}\n'))
    assert warm.read(time.monotonic() + 5, until=marker, line=True)
    assert warm.stdout.endswith(marker + b'{"result": 1, "more": 2}\n') and not warm.ended
    assert bytes(warm.stderr) == b"noise"


def test_a_marker_split_across_frames_is_found(stream):
    warm, container = stream
    container.sendall(frame(b"xx@@RES") + frame(b"ULT abc {}\n"))
    assert warm.read(time.monotonic() + 5, until=b"@@RESULT abc ", line=True)


def test_the_end_of_the_stream_ends_the_read(stream):
    warm, container = stream
    container.sendall(frame(b"@@RESULT abc {"))  # the container died mid-report
    container.shutdown(socket.SHUT_WR)
    assert warm.read(time.monotonic() + 5, until=b"@@RESULT abc ", line=True)
    assert warm.ended


def test_a_report_past_its_limit_stops_the_read(stream):
    warm, container = stream
    warm.stdout_limit = 10
    container.sendall(frame(b"x" * 64))
    assert warm.read(time.monotonic() + 5, until=b"@@RESULT abc ", line=True)
    assert warm.overflow and len(warm.stdout) == 10
