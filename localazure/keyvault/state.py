"""What Key Vault keeps: secrets (a head per name, one record per version), deleted secrets and
deleted vaults, in the store under kinds of their own and keyed by the vault's name (vault names
are unique across Azure, so a soft-deleted vault's secrets stay under its name until purged).

Secret values are sealed with AES-GCM under a key of the emulator's state directory before they
reach the store, as Key Vault keeps them encrypted at rest: the database, its debug dumps and
backups never hold a value in clear.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from localazure.core.context import Context

HEAD_KIND = "kv-secret"
VERSION_KIND = "kv-secret-version"
DELETED_VAULT_KIND = "kv-deleted-vault"
_KEY_FILE = "keyvault-sealing.key"
_DAY = 86400


class Sealer:
    """Seals and opens secret values with a key kept in the state directory (0600)."""

    def __init__(self, state_dir: Path):
        path = state_dir / _KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(AESGCM.generate_key(bit_length=256))
        self._aead = AESGCM(path.read_bytes())

    def seal(self, value: str, context: str) -> dict[str, str]:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8"), context.encode())
        return {
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(sealed).decode(),
        }

    def open(self, sealed: dict[str, str], context: str) -> str:
        plain = self._aead.decrypt(
            base64.b64decode(sealed["nonce"]),
            base64.b64decode(sealed["ciphertext"]),
            context.encode(),
        )
        return plain.decode("utf-8")


_SEALERS: dict[Path, Sealer] = {}


def sealer(ctx: Context) -> Sealer:
    state_dir = ctx.settings.state_dir
    if state_dir not in _SEALERS:
        _SEALERS[state_dir] = Sealer(state_dir)
    return _SEALERS[state_dir]


def _head_key(vault: str, name: str) -> str:
    return f"{vault.lower()}/{name.lower()}"


def _version_key(vault: str, name: str, version: str) -> str:
    return f"{_head_key(vault, name)}/{version}"


# -- secrets ----------------------------------------------------------------------------------


def head(ctx: Context, vault: str, name: str) -> dict[str, Any] | None:
    return ctx.store.get(HEAD_KIND, _head_key(vault, name))


def heads(ctx: Context, vault: str) -> list[dict[str, Any]]:
    return ctx.store.values(HEAD_KIND, vault.lower() + "/")


def version(ctx: Context, vault: str, name: str, version_id: str) -> dict[str, Any] | None:
    return ctx.store.get(VERSION_KIND, _version_key(vault, name, version_id.lower()))


def versions(ctx: Context, vault: str, name: str) -> list[dict[str, Any]]:
    return ctx.store.values(VERSION_KIND, _head_key(vault, name) + "/")


def value_of(ctx: Context, vault: str, record: dict[str, Any]) -> str:
    return sealer(ctx).open(
        record["sealed"], _version_key(vault, record["name"], record["version"])
    )


def add_version(
    ctx: Context,
    vault: str,
    name: str,
    value: str,
    *,
    content_type: str | None,
    tags: dict[str, str],
    attributes: dict[str, Any],
) -> dict[str, Any]:
    """A new current version of ``name`` (created on the first set)."""
    now = int(time.time())
    version_id = uuid.uuid4().hex
    existing = head(ctx, vault, name)
    stored_name = existing["name"] if existing else name
    record = {
        "name": stored_name,
        "version": version_id,
        "enabled": attributes.get("enabled", True),
        "nbf": attributes.get("nbf"),
        "exp": attributes.get("exp"),
        "created": now,
        "updated": now,
        "contentType": content_type,
        "tags": tags,
        "sealed": sealer(ctx).seal(value, _version_key(vault, stored_name, version_id)),
    }
    with ctx.store.transaction():
        ctx.store.put(VERSION_KIND, _version_key(vault, name, version_id), record)
        ctx.store.put(
            HEAD_KIND, _head_key(vault, name), {"name": stored_name, "current": version_id}
        )
    return record


def update_version(ctx: Context, vault: str, record: dict[str, Any], changes: dict) -> dict:
    record = {**record, **changes, "updated": int(time.time())}
    ctx.store.put(VERSION_KIND, _version_key(vault, record["name"], record["version"]), record)
    return record


def mark_deleted(ctx: Context, vault: str, name: str, retention_days: int) -> dict[str, Any]:
    record = head(ctx, vault, name) or {}
    now = int(time.time())
    record["deleted"] = {"deletedDate": now, "scheduledPurgeDate": now + retention_days * _DAY}
    ctx.store.put(HEAD_KIND, _head_key(vault, name), record)
    return record


def recover(ctx: Context, vault: str, name: str) -> dict[str, Any]:
    record = head(ctx, vault, name) or {}
    record.pop("deleted", None)
    ctx.store.put(HEAD_KIND, _head_key(vault, name), record)
    return record


def purge(ctx: Context, vault: str, name: str) -> None:
    with ctx.store.transaction():
        ctx.store.delete(HEAD_KIND, _head_key(vault, name))
        ctx.store.delete_prefix(VERSION_KIND, _head_key(vault, name) + "/")


def purge_vault_content(ctx: Context, vault: str) -> None:
    with ctx.store.transaction():
        ctx.store.delete_prefix(HEAD_KIND, vault.lower() + "/")
        ctx.store.delete_prefix(VERSION_KIND, vault.lower() + "/")


# -- deleted vaults ---------------------------------------------------------------------------


def deleted_vault(ctx: Context, name: str) -> dict[str, Any] | None:
    return ctx.store.get(DELETED_VAULT_KIND, name.lower())


def deleted_vaults(ctx: Context) -> list[dict[str, Any]]:
    return ctx.store.values(DELETED_VAULT_KIND)


def keep_deleted_vault(ctx: Context, vault: dict[str, Any], deletion_date: str) -> None:
    days = vault["properties"].get("softDeleteRetentionInDays", 90)
    purge_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + days * _DAY))
    ctx.store.put(
        DELETED_VAULT_KIND,
        vault["name"].lower(),
        {"vault": vault, "deletionDate": deletion_date, "scheduledPurgeDate": purge_at},
    )


def forget_deleted_vault(ctx: Context, name: str) -> None:
    ctx.store.delete(DELETED_VAULT_KIND, name.lower())
