# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One SSH connection per host (paramiko), reopened when it drops, for the VM tier.

A host's key is trusted the first time it is seen and pinned for the life of the object
(``HostKeyChanged`` afterwards): the pool's VMs are found through ARM, whose answer is the trust
anchor, so no known_hosts file has to be prepared; a different key on a later connection is an
error. Password and agent authentication are off: only the pool's private key is offered.
"""

from __future__ import annotations

import socket
import threading
import traceback
from dataclasses import dataclass, field

try:
    import paramiko

    PARAMIKO_IMPORT_ERROR = None
    _SSHException = paramiko.SSHException
    _MissingHostKeyPolicy = paramiko.MissingHostKeyPolicy
except ImportError:
    # reported by the VM tier (and by SshHost) with missing_required_lib("paramiko")
    PARAMIKO_IMPORT_ERROR = traceback.format_exc()

    class _SSHException(Exception):
        """Stand-in for paramiko.SSHException, so that this file loads without paramiko."""

    _MissingHostKeyPolicy = object

from ansible.module_utils.basic import missing_required_lib

# Errors that mean "the host did not answer over SSH" (as opposed to a command that failed).
SSH_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    socket.timeout,
)
if PARAMIKO_IMPORT_ERROR is None:
    SSH_ERRORS += (paramiko.SSHException,)


class HostKeyChanged(_SSHException):
    """The host answered with another key than the one it was first seen with."""


class _PinningPolicy(_MissingHostKeyPolicy):
    def __init__(self, host: SshHost) -> None:
        self.host = host

    def missing_host_key(self, client, hostname, key) -> None:
        pinned = self.host.host_key
        if pinned is not None and pinned.asbytes() != key.asbytes():
            raise HostKeyChanged(
                f"the SSH host key of {self.host.name} ({hostname}) changed since it was first "
                "seen in this run; refusing to connect"
            )
        self.host.host_key = key


@dataclass
class SshHost:
    name: str
    address: str
    port: int
    user: str
    key_file: str
    connect_timeout: float = 10.0
    keepalive_s: int = 5
    host_key: paramiko.PKey | None = None
    _client: paramiko.SSHClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def transport(self) -> paramiko.Transport:
        """The live connection, opened (again) when there is none."""
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if client is not None:
                client.close()
            self._client = None
            if PARAMIKO_IMPORT_ERROR:
                raise RuntimeError(missing_required_lib("paramiko"))
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(_PinningPolicy(self))
            client.connect(
                self.address,
                port=self.port,
                username=self.user,
                key_filename=self.key_file,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            transport = client.get_transport()
            if transport is None:
                raise RuntimeError(f"SSH to {self.name} connected but opened no transport")
            transport.set_keepalive(self.keepalive_s)
            self._client = client
            return transport

    def open(self, command: str, timeout: float | None = None) -> paramiko.Channel:
        """A channel running ``command``; read its stdout as it comes."""
        channel = self.transport().open_session(timeout=self.connect_timeout)
        channel.settimeout(timeout)
        channel.exec_command(command)
        return channel

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float = 120.0
    ) -> tuple[int, str, str]:
        """Run ``command`` to its end: (exit code, stdout, stderr). ``stdin`` is written to the
        command's standard input, then closed (how secrets reach a command without appearing in
        its command line)."""
        channel = self.open(command, timeout=timeout)
        try:
            stdout, stderr = channel.makefile("rb"), channel.makefile_stderr("rb")
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = stdout.read(), stderr.read()
            code = channel.recv_exit_status()
            if code == -1:  # closed without an exit status: the connection went away
                raise EOFError(f"the SSH connection to {self.name} closed")
            return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        finally:
            channel.close()

    def transport_active(self) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
