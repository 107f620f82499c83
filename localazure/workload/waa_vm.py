"""A stand-in for the Windows VM inside WAA's container (its ``start_vm.sh``: dockur/windows
booting the prepared golden image under QEMU/KVM, then WAA's server answering ``GET /probe``).

    python -m localazure.workload.waa_vm

It does what the real VM start does, in order, and fails the way it fails:

1. The golden image must be at ``WAA_GOLDEN_IMAGE_PATH`` (the container's ``/storage``): a
   ``data.img`` that is there, not empty and a whole number of 512-byte sectors. Otherwise it
   prints dockur's ``Error: ISO file not found or is empty.`` and waits forever, as the real
   container does (the seed's post-mortem: 31 minutes of that line, the VM never booting).
2. KVM: ``WAA_STANDIN_KVM`` names why ``/dev/kvm`` is missing (the emulator sets it on a
   TrustedLaunch node or a size without nested virtualization); then it prints QEMU's and
   dockur's errors and exits with code 1.
3. It "boots" for ``WAA_STANDIN_VM_BOOT_S`` seconds (the emulator scales it by VM size, like its
   other simulated delays), then serves ``GET /probe`` (200) on ``WAA_STANDIN_VM_LISTEN``
   (``host:port`` on a loopback address; the worker is told the same address as
   ``WAA_PROBE_URL``).

Workload faults (``WAA_STANDIN_VM_FAULT``): ``boot_hang`` never finishes booting;
``probe_stops`` stops answering ``WAA_STANDIN_VM_FAULT_AFTER_S`` seconds after its first boot
(nothing listens at its address any more; the worker then restarts the VM, which boots and
answers again); ``restart_fails`` boots once,
stops answering after that delay, and hangs at every later boot. Boots are counted in
``<TMPDIR>/waa-standin-vm/boots`` (the VM's own disk state, in the container's working
directory).
"""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
import time
from pathlib import Path

SECTOR = 512
ISO_MISSING = "Error: ISO file not found or is empty."
DEFAULT_BOOT_S = 1.0
DEFAULT_LISTEN = "127.0.0.1:5000"
FAULTS = ("boot_hang", "probe_stops", "restart_fails")


def say(line: str) -> None:
    print(line, flush=True)


def golden_image_problem(path: Path) -> str | None:
    """Why the folder is not a usable golden image, or None: the same rule as the worker's
    ``image_ready`` check."""
    disk = path / "data.img"
    if not path.is_dir():
        return f"{path} does not exist"
    if not disk.is_file():
        return f"{disk} does not exist"
    size = disk.stat().st_size
    if size == 0:
        return f"{disk} is empty"
    if size % SECTOR:
        return f"{disk} is truncated ({size} bytes, not a whole number of {SECTOR}-byte sectors)"
    return None


def boot_number(state_dir: Path) -> int:
    """Count this boot in the VM's state; 1 for the first boot in this container."""
    state_dir.mkdir(parents=True, exist_ok=True)
    counter = state_dir / "boots"
    number = int(counter.read_text() or "0") + 1 if counter.exists() else 1
    counter.write_text(str(number))
    return number


class _Probe(http.server.BaseHTTPRequestHandler):
    answering = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self.answering.is_set():
            # Still booting: Windows' network is up before WAA's server is.
            self.send_error(503)
            return
        if self.path.split("?")[0] != "/probe":
            self.send_error(404)
            return
        body = b'{"status": "Probe successful", "message": "Service is operational"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


def hang() -> None:
    threading.Event().wait()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    say("Starting WinArena VM...")
    say("❯ Starting Windows for Docker (localazure stand-in)...")
    image = Path(os.environ.get("WAA_GOLDEN_IMAGE_PATH", "/storage"))
    problem = golden_image_problem(image)
    if problem:
        say(f"❯ {problem}")
        say(ISO_MISSING)
        hang()  # dockur's start script waits here; the container never exits by itself
    kvm_missing = os.environ.get("WAA_STANDIN_KVM", "")
    if kvm_missing:
        say(
            "qemu-system-x86_64: -accel kvm: Could not access KVM kernel module: No such file or directory"
        )
        say("qemu-system-x86_64: -accel kvm: failed to initialize kvm: No such file or directory")
        say("❯ ERROR: KVM acceleration not available (device file /dev/kvm is missing).")
        say(f"❯ {kvm_missing}")
        return 1
    fault = os.environ.get("WAA_STANDIN_VM_FAULT", "")
    after_s = float(os.environ.get("WAA_STANDIN_VM_FAULT_AFTER_S", "1") or 1)
    tmp = Path(os.environ.get("TMPDIR") or ".")
    number = boot_number(tmp / "waa-standin-vm")
    host, _, port = os.environ.get("WAA_STANDIN_VM_LISTEN", DEFAULT_LISTEN).rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), _Probe)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    say(f"❯ Booting Windows from {image / 'data.img'} (boot {number})...")
    if fault == "boot_hang" or (fault == "restart_fails" and number > 1):
        hang()
    time.sleep(float(os.environ.get("WAA_STANDIN_VM_BOOT_S", DEFAULT_BOOT_S)))
    _Probe.answering.set()
    say(f"❯ Windows started successfully; WAA server on http://{host}:{port}")
    if fault in ("probe_stops", "restart_fails") and number == 1:
        time.sleep(after_s)
        # The Windows VM is gone (a guest crash): nothing listens at its address any more.
        server.shutdown()
        server.server_close()
        say("❯ (the Windows VM stopped answering)")
    hang()
    return 0


if __name__ == "__main__":
    sys.exit(main())
