"""Fixtures for the smoke tests: real servers on free 127.0.0.1 ports, stopped after each test.

* ``http_server(Handler, port=0)``: a ``ThreadingHTTPServer`` in a thread (handlers in smoke_servers.py).
* ``late_server(Handler, delay)``: a port that refuses connections now and serves after ``delay`` seconds.
* ``pg_starting_server``: a real TCP server that answers every StartupMessage with ErrorResponse 57P03.
* ``silent_server``: accepts TCP connections and never says a word.
* ``closed_port``: a port nothing listens on.
"""

from __future__ import annotations

import socket
import threading

import pytest
from smoke_servers import PgStartingHandler, RunningServer, SilentHandler, TcpServer


@pytest.fixture
def http_server():
    """Factory: ``http_server(Handler, port=0)`` starts a real HTTP server; all stopped after the test."""
    servers = []

    def start(handler, port=0):
        server = RunningServer(handler, port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def late_server(http_server):
    """Factory: a port that refuses connections now and serves ``handler`` after ``delay`` seconds."""
    timers = []

    def start(handler, delay=1.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = threading.Event()

        def bring_up():
            http_server(handler, port)
            started.set()

        timer = threading.Timer(delay, bring_up)
        timer.daemon = True
        timer.start()
        timers.append(timer)
        return port, started

    yield start
    for timer in timers:
        timer.cancel()
        timer.join(5)


@pytest.fixture
def pg_starting_server():
    """A real socket server answering StartupMessages with ErrorResponse 57P03 (starting up)."""
    server = TcpServer(("127.0.0.1", 0), PgStartingHandler)
    server.startups = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server():
    """Accepts TCP connections and never answers (a hung Postgres)."""
    server = TcpServer(("127.0.0.1", 0), SilentHandler)
    server.stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
