"""Where the emulator lives and who it says it is.

Every value can be overridden with a ``LOCALAZURE_*`` environment variable so that tests and
parallel runs can use their own port and state directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 44300
# Fixed identities of the emulated tenant, so that a state directory stays valid across restarts
# and documentation can show real values.
DEFAULT_TENANT_ID = "72f988bf-0000-4000-8000-00000000aa01"
DEFAULT_SUBSCRIPTION_ID = "9f3c2a51-0000-4000-8000-00000000aa02"
DEFAULT_CLIENT_ID = "5b6d7e8f-0000-4000-8000-00000000aa03"
# Hosts the emulator answers for under their real names (registry login servers, the public
# registries images are imported from, Batch account, storage account and key vault endpoints);
# the client hook resolves them to the emulator. A leading dot means "any host under this domain".
REDIRECTED_SUFFIXES = (
    ".azurecr.io",
    ".docker.io",
    "mcr.microsoft.com",
    ".batch.azure.com",
    ".blob.core.windows.net",
    ".file.core.windows.net",
    ".vault.azure.net",
)
# Suffixes whose hosts have a region label (``<account>.<region>.batch.azure.com``): the server
# certificate names ``*.<region><suffix>`` for every emulated region, as a wildcard covers one label.
REGIONAL_SUFFIXES = (".batch.azure.com",)


def _default_state_dir() -> Path:
    return Path(os.environ.get("LOCALAZURE_STATE_DIR", Path.cwd() / ".state" / "localazure"))


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    state_dir: Path = field(default_factory=_default_state_dir)
    tenant_id: str = DEFAULT_TENANT_ID
    subscription_id: str = DEFAULT_SUBSCRIPTION_ID
    client_id: str = DEFAULT_CLIENT_ID

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            host=env.get("LOCALAZURE_HOST", "127.0.0.1"),
            port=int(env.get("LOCALAZURE_PORT", DEFAULT_PORT)),
            state_dir=_default_state_dir().resolve(),
            tenant_id=env.get("LOCALAZURE_TENANT_ID", DEFAULT_TENANT_ID),
            subscription_id=env.get("LOCALAZURE_SUBSCRIPTION_ID", DEFAULT_SUBSCRIPTION_ID),
            client_id=env.get("LOCALAZURE_CLIENT_ID", DEFAULT_CLIENT_ID),
        )

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.sqlite3"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def ca_bundle(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def secret_file(self) -> Path:
        return self.state_dir / "client_secret"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"
