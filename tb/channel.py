"""Messages between a host process and the simulator it runs: one framing, one serialisation.

Why a socket: a simulator process is started by cocotb's runner and lives as long as its test;
a training step sends it dozens of programs, so the host keeps one simulator alive and talks
to the cocotb coroutine inside it. Messages are dicts of plain data and NumPy arrays, pickled
(both ends are the same Python with the same packages) behind an 8-byte length, over a Unix
socket in a private temporary folder.
"""

from __future__ import annotations

import pickle
import socket
import struct
from pathlib import Path
from typing import Any

__all__ = ["CHANNEL_ENV", "TOP_ENV", "Channel", "ChannelClosed", "ChannelTimeout"]

#: Environment variables that tell the simulator's coroutine where to connect and what it runs.
CHANNEL_ENV = "CDM_QTA_CHANNEL"
TOP_ENV = "CDM_QTA_TOP"

_HEADER = struct.Struct("<Q")


class ChannelClosed(ConnectionError):
    """The other end went away (the simulator exited or crashed)."""


class ChannelTimeout(TimeoutError):
    """No message arrived within the wait's bound."""


class Channel:
    """One connected socket; :meth:`send` and :meth:`recv` move whole messages."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    @classmethod
    def connect(cls, path: str | Path) -> Channel:
        """The simulator's end: connect to the host's listening socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        return cls(sock)

    def send(self, message: dict[str, Any]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._sock.sendall(_HEADER.pack(len(data)) + data)
        except OSError as exc:
            raise ChannelClosed(f"the other end is gone: {exc}") from None

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; :class:`ChannelTimeout` after ``timeout`` seconds without one."""
        self._sock.settimeout(timeout)
        try:
            (size,) = _HEADER.unpack(self._read(_HEADER.size))
            message = pickle.loads(self._read(size))
        except TimeoutError:
            raise ChannelTimeout(f"no message within {timeout} s") from None
        finally:
            self._sock.settimeout(None)
        if not isinstance(message, dict):
            raise ChannelClosed(f"expected a dict message, got {type(message).__name__}")
        return message

    def _read(self, size: int) -> bytes:
        chunks = []
        while size:
            try:
                chunk = self._sock.recv(min(size, 1 << 20))
            except ConnectionError as exc:
                raise ChannelClosed(f"the other end is gone: {exc}") from None
            if not chunk:
                raise ChannelClosed("the other end closed the connection")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
