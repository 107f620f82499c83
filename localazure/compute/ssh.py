"""One SSH server per running VM (asyncssh's server: the real SSH protocol), on the VM's public
IP address, with the VM's own host key, accepting only the admin user with one of the public
keys of ``osProfile`` (no password login). A connection is accepted only when the NSGs on the
VM's NIC and subnet allow the client's address to the SSH port (``network.security``).

The port is ``network.addresses.ssh_port()`` (22 when the emulator may bind it, else 2222):
every VM has its own address, so they all share the one port.

Commands run with ``bash`` in the admin user's home on the VM's disk, in a process group of
their own that ends with the connection (as sshd hangs up a session). The servers live on one
asyncio loop in a thread of their own; the lifecycle calls ``ensure``/``stop``/``drop`` from its
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from localazure.network.addresses import ssh_port

log = logging.getLogger("localazure.compute.ssh")


@dataclass
class Session:
    """What the server needs to know about a VM when a client connects."""

    admin_user: str
    public_keys: list[str]
    workdir: Path
    env: dict[str, str]
    # fn(client address) -> True when the NSGs let the client in
    admits: Callable[[str], bool]


@dataclass
class _Server:
    server: Any
    generation: tuple
    connections: set = field(default_factory=set)
    processes: set = field(default_factory=set)


class SshHub:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="localazure-ssh", daemon=True
        )
        self._servers: dict[str, _Server] = {}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.port = ssh_port()

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def close(self) -> None:
        for key in self.running():
            self.stop(key)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self, coro, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- what the lifecycle calls -----------------------------------------------------------------

    def running(self) -> list[str]:
        with self._lock:
            return list(self._servers)

    def ensure(
        self, key: str, host: str, host_key: str, generation: tuple, session: Session
    ) -> None:
        """Serve the VM on ``host``; a new ``generation`` (a reboot, a new address) restarts it."""
        with self._lock:
            self._sessions[key] = session
            current = self._servers.get(key)
        if current is not None and current.generation == generation:
            return
        if current is not None:
            self.stop(key)
        self._sessions[key] = session
        server = self._run(self._listen(key, host, host_key))
        with self._lock:
            self._servers[key] = _Server(server, generation)
        log.info("SSH server of %s listening on %s:%d", key.rsplit("/", 1)[-1], host, self.port)

    def stop(self, key: str) -> None:
        """Stop listening, drop every connection and end its sessions (the VM went down)."""
        with self._lock:
            entry = self._servers.pop(key, None)
        if entry is None:
            return
        self._run(self._close(entry))

    def drop(self, key: str) -> int:
        """Drop the VM's connections as a network failure would; the server keeps listening."""
        with self._lock:
            entry = self._servers.get(key)
        if entry is None:
            return 0
        return self._run(self._abort(entry))

    # -- on the loop ------------------------------------------------------------------------------

    async def _listen(self, key: str, host: str, host_key: str) -> Any:
        hub = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self._conn = conn
                peer = (conn.get_extra_info("peername") or ("",))[0]
                session = hub._sessions.get(key)
                if session is None or not session.admits(peer):
                    # Azure drops the packets (the client times out); the emulator closes at once.
                    conn.abort()
                    return
                entry = hub._servers.get(key)
                if entry is not None:
                    entry.connections.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                entry = hub._servers.get(key)
                if entry is not None:
                    entry.connections.discard(self._conn)

            def begin_auth(self, username: str) -> bool:
                session = hub._sessions.get(key)
                keys = session.public_keys if session and username == session.admin_user else []
                self._conn.set_authorized_keys(
                    asyncssh.import_authorized_keys("\n".join(keys)) if keys else None
                )
                return True

            def password_auth_supported(self) -> bool:
                return False

            def public_key_auth_supported(self) -> bool:
                return True

        async def handle(process: asyncssh.SSHServerProcess) -> None:
            await hub._session(key, process)

        return await asyncssh.create_server(
            Server,
            host,
            self.port,
            server_host_keys=[asyncssh.import_private_key(host_key)],
            process_factory=handle,
            # SFTP (and scp over it) as on an Ubuntu VM; Ansible copies its modules with it.
            sftp_factory=True,
            encoding=None,
            reuse_address=True,
            keepalive_interval=15,
        )

    async def _session(self, key: str, process: asyncssh.SSHServerProcess) -> None:
        session = self._sessions[key]
        command = process.command
        argv = ["bash", "-c", command] if command else ["bash", "-s"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=session.workdir,
            env=session.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        entry = self._servers.get(key)
        if entry is not None:
            entry.processes.add(proc)
        try:
            await process.redirect(stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr)
            code = await proc.wait()
            with contextlib.suppress(Exception):
                await process.stdout.drain()
                await process.stderr.drain()
            process.exit(128 - code if code < 0 else code)
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            pass
        finally:
            _hang_up(proc)
            if entry is not None:
                entry.processes.discard(proc)

    async def _abort(self, entry: _Server) -> int:
        dropped = list(entry.connections)
        for conn in dropped:
            conn.abort()
        for proc in list(entry.processes):
            _hang_up(proc)
        return len(dropped)

    async def _close(self, entry: _Server) -> None:
        entry.server.close()
        await self._abort(entry)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(entry.server.wait_closed(), 5)


def _hang_up(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGHUP)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
