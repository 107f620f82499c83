"""localazure: an Azure emulator speaking Azure's wire protocol over HTTPS.

One package per emulated service (``arm``, ``identity``, ``acr``, ``authorization``, ``msi``,
``ml``...), each with its routes, models and state; one SQLite store (``core.store``); an admin
API outside Azure's namespace (``admin``).
"""

__version__ = "0.1.0"
