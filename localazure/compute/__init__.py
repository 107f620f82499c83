"""Microsoft.Compute: virtual machines (power states, identities, custom data, managed disks,
quota), images captured from generalized VMs, the marketplace images and VM sizes a user chooses
from. Every running VM has an SSH server on its public IP (``ssh``) whose sessions run in the
VM's disk (``sandbox``) with a ``docker`` that talks to the emulator (``docker_engine``)."""

NAMESPACE = "Microsoft.Compute"
VM_TYPE = f"{NAMESPACE}/virtualMachines"
DISK_TYPE = f"{NAMESPACE}/disks"
IMAGE_TYPE = f"{NAMESPACE}/images"
