"""Slow and stalled clients cannot hold the server (issue 10, defect 3), over raw sockets.

Every case is a real TCP client doing what a slowloris attack or a broken client does:
headers that never end, a body that never comes, an endless chunked upload, megabytes of
headers, an idle keep-alive connection. Each is answered (408/431) and cut off by the
server, which meanwhile keeps answering health checks. The waits below are the client's
patience (generous), not speed targets: a server without the limits never closes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from headrace.registry import Registry
from support.models import local_registry
from support.serving import RunningServer, free_port, register_models, running_server

PATIENCE_S = 30.0  # how long a client waits for the server to act; far past every limit
LIMITS = {
    "header_timeout_s": 1.0,
    "body_timeout_s": 1.5,
    "keepalive_timeout_s": 1.0,
    "max_header_bytes": 8192,
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with local_registry(tmp_path_factory.mktemp("slow")) as opened:
        register_models(opened, tmp_path_factory.mktemp("models"))
        yield opened


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[RunningServer]:
    with running_server(registry, port=free_port(), settings={"connections": LIMITS}) as running:
        yield running


def connect(server: RunningServer) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or patience ends)."""
    chunks: list[bytes] = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_headers_that_never_end_get_408_and_the_connection_closed(
    server: RunningServer,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        response = read_until_closed(sock)
    assert status_of(response) == 408
    assert b"connection: close" in response.lower()


def test_a_connection_that_sends_nothing_is_closed(server: RunningServer) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_headers_trickled_a_byte_at_a_time_are_cut_off(server: RunningServer) -> None:
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: a\r\n" * 1000
    with connect(server) as sock:
        answer: list[bytes] = []
        try:
            for byte in request:  # each byte well inside any per-read timeout
                sock.sendall(bytes([byte]))
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer.append(read_until_closed(sock))
    assert status_of(b"".join(answer)) == 408


def test_a_partial_body_gets_408(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"inputs": ['
        )
        response = read_until_closed(sock)
    assert status_of(response) == 408
    assert b"body_timeout_s" in response


def test_an_endless_chunked_body_gets_408(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        stop = threading.Event()

        def drip() -> None:  # a chunk every 50 ms, forever
            try:
                while not stop.is_set():
                    sock.sendall(b"1\r\n \r\n")
                    time.sleep(0.05)
            except OSError:
                pass

        dripping = threading.Thread(target=drip, daemon=True)
        dripping.start()
        try:
            response = read_until_closed(sock)
        finally:
            stop.set()
            dripping.join(timeout=PATIENCE_S)
    assert status_of(response) == 408


@pytest.mark.parametrize("size", [9_000, 1_000_000, 20_000_000])
def test_huge_headers_get_431_and_are_not_kept(server: RunningServer, size: int) -> None:
    header = b"X-Big: " + b"a" * 1000 + b"\r\n"
    with connect(server) as sock:
        sent = 0
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            while sent < size:
                sock.sendall(header * 64)
                sent += len(header) * 64
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up mid-way: what we want
        response = read_until_closed(sock)
    assert sent < size or response  # it stopped reading or answered
    if response:
        assert status_of(response) == 431


def test_an_idle_keep_alive_connection_is_closed(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_until_closed(sock)
    assert status_of(response) == 200
    assert response.endswith(b'{"live":true}')


def test_a_request_with_normal_headers_and_body_is_served(server: RunningServer) -> None:
    answer = requests.get(f"{server.url}/v2/health/ready", timeout=PATIENCE_S)
    assert answer.status_code == 200


def test_health_checks_answer_while_100_connections_stall(registry: Registry) -> None:
    # Limits far away: the 100 stalled connections stay open for the whole test.
    settings = {"connections": {"header_timeout_s": 120, "body_timeout_s": 120}}
    with running_server(registry, port=free_port(), settings=settings) as server:
        stalled: list[socket.socket] = []
        try:
            for i in range(100):
                sock = connect(server)
                kind = i % 3
                if kind == 0:
                    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
                elif kind == 1:
                    sock.sendall(
                        b"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 100000\r\n\r\n{"
                    )
                else:
                    sock.sendall(
                        b"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: x\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n1\r\n \r\n"
                    )
                stalled.append(sock)
            for _ in range(20):
                for path in ("/v2/health/live", "/v2/health/ready"):
                    answer = requests.get(f"{server.url}{path}", timeout=PATIENCE_S)
                    assert answer.status_code == 200
        finally:
            for sock in stalled:
                sock.close()


def test_past_the_connection_cap_requests_get_503_until_others_finish(
    registry: Registry,
) -> None:
    settings = {"connections": {"max_connections": 8, "header_timeout_s": 120}}
    with running_server(registry, port=free_port(), settings=settings) as server:
        stalled = [connect(server) for _ in range(8)]
        try:
            for sock in stalled:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            answer = requests.get(f"{server.url}/v2/health/live", timeout=PATIENCE_S)
            assert answer.status_code == 503
        finally:
            for sock in stalled:
                sock.close()
        deadline = time.monotonic() + PATIENCE_S
        while True:  # the server notices the closed sockets on its next loop turn
            answer = requests.get(f"{server.url}/v2/health/live", timeout=PATIENCE_S)
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.status_code == 200


def test_pipelined_requests_are_all_answered(server: RunningServer) -> None:
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(request * 3)
        response = read_until_closed(sock)  # then the keep-alive timeout closes it
    assert response.count(b"HTTP/1.1 200") == 3


def test_a_body_sent_on_after_an_early_answer_is_cut_off(server: RunningServer) -> None:
    # The route answers without reading the body; the client keeps sending it forever.
    with connect(server) as sock:
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        stop = threading.Event()

        def drip() -> None:
            try:
                while not stop.is_set():
                    sock.sendall(b"1\r\n \r\n")
                    time.sleep(0.05)
            except OSError:
                pass

        dripping = threading.Thread(target=drip, daemon=True)
        dripping.start()
        try:
            response = read_until_closed(sock)
        finally:
            stop.set()
            dripping.join(timeout=PATIENCE_S)
    assert response.startswith(b"HTTP/1.1 200")


def test_a_big_body_after_an_early_404_is_not_taken_for_headers(server: RunningServer) -> None:
    body = b"x" * 200_000  # past max_header_bytes, sent after the 404 went out
    with connect(server) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.2)
        sock.sendall(body)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 404")
    assert b"431" not in response
    assert response.count(b"HTTP/1.1 200") == 1  # the next request on it was served
