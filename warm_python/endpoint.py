"""Where the server for this interpreter and environment listens, and how a request is framed."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import sysconfig
from pathlib import Path

# Shell bookkeeping that differs between otherwise identical module runs; the child still gets
# the client's values, they only do not select the server.
_VOLATILE = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})
_LENGTH = 8


def _state_of_installation() -> str:
    """Changes when a package is installed or removed, or when this package changes."""
    site = Path(sysconfig.get_paths()["purelib"])
    here = Path(__file__).parent
    stamps = [site.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in here.glob("*.py")]
    return ",".join(map(str, stamps))


def server_key(environ: dict[str, str]) -> str:
    material = {
        "prefix": sys.prefix,
        "version": sys.version,
        "installation": _state_of_installation(),
        "environ": sorted((k, v) for k, v in environ.items() if k not in _VOLATILE),
    }
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:24]


# A Unix socket's path has at most 107 bytes; a longer runtime directory is passed over.
_LONGEST_DIRECTORY = 64


def runtime_dir(environ: dict[str, str]) -> Path:
    """A directory only this user can enter; an error when that cannot be ensured."""
    base = environ.get("XDG_RUNTIME_DIR") or "/tmp"
    if len(base) > _LONGEST_DIRECTORY:
        base = "/tmp"
    path = Path(base) / f"warm-python-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not path.is_dir():
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


def socket_path(environ: dict[str, str]) -> Path:
    return runtime_dir(environ) / f"{server_key(environ)}.sock"


def lock_path(socket_file: Path) -> Path:
    """Held by the server of ``socket_file`` for its life: one server per environment."""
    return socket_file.with_name(f"{socket_file.name}.lock")


def log_path(socket_file: Path) -> Path:
    """Why the server of ``socket_file`` could not start, if it could not."""
    return socket_file.with_name(f"{socket_file.name}.log")


def send_request(conn: socket.socket, request: dict, fds: list[int]) -> None:
    body = json.dumps(request).encode()
    socket.send_fds(conn, [len(body).to_bytes(_LENGTH, "big")], fds)
    conn.sendall(body)


def receive_request(conn: socket.socket, fd_count: int) -> tuple[dict, list[int]]:
    header, fds, _flags, _address = socket.recv_fds(conn, _LENGTH, fd_count)
    if len(header) != _LENGTH or len(fds) != fd_count:
        for fd in fds:
            os.close(fd)
        raise ConnectionError("incomplete request")
    length = int.from_bytes(header, "big")
    body = bytearray()
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ConnectionError("incomplete request")
        body += chunk
    return json.loads(body), fds
