"""Ctrl-C and SIGTERM during a DuckDB query.

DuckDB's Python client notices a signal only at some points of a query: measured with
DuckDB 2.0, a SIGINT sent 70 ms or more into a long query was often never seen (the query
ran on, and so did a second SIGINT). So the command line also watches for signals on a
thread of its own (``signal.set_wakeup_fd``: the interpreter writes each signal's number
there at once, whatever the main thread is doing) and interrupts every open connection
registered here; the query then fails with DuckDB's "Query interrupted", which the command
line turns into its exit code.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["register", "watch"]

_connections: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def register(connection: Any) -> Any:
    """Interrupt this DuckDB connection's query on SIGINT or SIGTERM; returns it."""
    with _lock:
        _connections.add(connection)
    return connection


def _interrupt_all() -> None:
    with _lock:
        connections = list(_connections)
    for connection in connections:
        with contextlib.suppress(Exception):  # closed meanwhile: nothing to interrupt
            connection.interrupt()


def watch(on_signal: Callable[[int], None] | None = None) -> Callable[[], None]:
    """Start watching (main thread only); returns the function that stops it.
    ``on_signal(number)`` runs on the watcher's thread before the connections are
    interrupted."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data = reader.recv(64)
            except OSError:
                return
            if stop.is_set() or not data:
                return
            numbers = set(data)
            if numbers & {signal.SIGINT, signal.SIGTERM}:
                if on_signal is not None:
                    for number in numbers:
                        on_signal(number)
                _interrupt_all()

    thread = threading.Thread(target=run, name="clm-signal-watch", daemon=True)
    thread.start()

    def stop_watching() -> None:
        stop.set()
        signal.set_wakeup_fd(previous)
        writer.close()  # wakes the reader (recv returns b"" or fails)
        reader.close()

    return stop_watching
