"""``Microsoft.KeyVault/vaults`` on ARM: name availability, create/update (``createMode``
``recover`` included), get, list, patch, delete (soft delete: the vault and its secrets are kept
as a deleted vault until purged), and ``deletedVaults`` get/list/purge."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    now_iso,
    provider_id,
    resource_group_or_404,
    resource_or_404,
    subscription_id_or_404,
    system_data,
)
from localazure.authorization.access import is_allowed, require
from localazure.core.context import Context
from localazure.core.errors import bad_request, conflict, not_found
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.keyvault import DELETED_VAULT_TYPE, NAMESPACE, VAULT_TYPE, models, state

READ = f"{VAULT_TYPE}/read"
WRITE = f"{VAULT_TYPE}/write"
DELETE = f"{VAULT_TYPE}/delete"
DELETED_READ = f"{DELETED_VAULT_TYPE}/read"
PURGE = f"{NAMESPACE}/locations/deletedVaults/purge/action"
CHECK_NAME = f"{NAMESPACE}/checkNameAvailability/read"


def find_vault(ctx: Context, name: str) -> dict[str, Any] | None:
    """The live vault of this name, wherever it is (vault names are global)."""
    return next(
        (v for v in ctx.store.list_resources(type=VAULT_TYPE) if v["name"].lower() == name.lower()),
        None,
    )


def _in_use(name: str) -> Any:
    return conflict(
        "VaultAlreadyExists",
        f"The vault name '{name}' is already in use. Vault names are globally unique so it is "
        "possible that the name is already taken. If you are sure that the vault name was not "
        "taken then it is possible that a vault with the same name was recently deleted but not "
        "purged after being placed in a recoverable state.",
    )


def _deleted_in_the_way(name: str) -> Any:
    return conflict(
        "ConflictError",
        f"A vault with the same name '{name}' already exists in deleted state. You need to "
        "either recover or purge existing key vault. Follow this link "
        "https://go.microsoft.com/fwlink/?linkid=2149745 for more information on soft delete.",
    )


def soft_delete_vaults(ctx: Context, resource_id: str) -> None:
    """Delete hook: a deleted vault (or resource group) keeps its vaults as deleted vaults, with
    their secrets, for their retention period."""
    target = resource_id.rstrip("/").lower()
    for vault in ctx.store.list_resources(type=VAULT_TYPE):
        key = vault["id"].lower()
        if key == target or key.startswith(target + "/"):
            state.keep_deleted_vault(ctx, vault, now_iso())


def register(router: Router, ctx: Context) -> None:
    def vault_id(rg: str, name: str) -> str:
        return provider_id(ctx, rg, NAMESPACE, "vaults", name)

    def load(request: Request, action: str, sub: str, rg: str, name: str) -> dict[str, Any]:
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, action, vault_id(rg, name))
        resource_group_or_404(ctx, sub, rg)
        return resource_or_404(ctx, vault_id(rg, name), VAULT_TYPE, name, rg)

    def readable(request: Request, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        caller = request.state.caller
        return [v for v in found if is_allowed(ctx, caller.object_id, READ, v["id"])]

    async def check_name(request: Request, sub: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, CHECK_NAME, f"/subscriptions/{ctx.subscription_id}")
        name = str((await json_body(request)).get("name") or "")
        if not models.vault_name_is_valid(name):
            return json_response(
                {
                    "nameAvailable": False,
                    "reason": "AccountNameInvalid",
                    "message": f"The vault name '{name}' is invalid.",
                }
            )
        if find_vault(ctx, name) or state.deleted_vault(ctx, name):
            return json_response(
                {
                    "nameAvailable": False,
                    "reason": "AlreadyExists",
                    "message": f"The vault name '{name}' is already in use.",
                }
            )
        return json_response({"nameAvailable": True})

    async def put_vault(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        caller = request.state.caller
        require(ctx, caller, WRITE, vault_id(rg, name))
        resource_group_or_404(ctx, sub, rg)
        models.check_vault_name(name)
        body = await json_body(request)
        requested = body.get("properties")
        rid = vault_id(rg, name)
        tenant_id = ctx.settings.tenant_id
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            recovering = str((requested or {}).get("createMode") or "").lower() == "recover"
            if existing is None:
                other = find_vault(ctx, name)
                if other is not None:
                    raise _in_use(name)
                deleted = state.deleted_vault(ctx, name)
                if deleted is not None and not recovering:
                    raise _deleted_in_the_way(name)
                if recovering:
                    if deleted is None:
                        raise bad_request(
                            "DeletedVaultNotFound",
                            f"The vault '{name}' was not found in the deleted state, so it "
                            "cannot be recovered (createMode 'recover').",
                        )
                    if deleted["vault"]["id"].lower() != rid.lower():
                        raise bad_request(
                            "BadRequest",
                            f"The deleted vault '{name}' belonged to "
                            f"'{deleted['vault']['id']}'; recover it there.",
                        )
                    vault = deleted["vault"]
                    state.forget_deleted_vault(ctx, name)
                    vault["systemData"] = system_data(vault, caller)
                    ctx.store.put_resource(vault)
                    return json_response(vault, 200)
            location = check_location(body.get("location"), VAULT_TYPE)
            if existing and location != existing["location"]:
                raise bad_request(
                    "BadRequest",
                    f"The vault '{name}' is in '{existing['location']}'; its location cannot be "
                    f"changed to '{location}'.",
                )
            vault = models.vault_body(
                existing["id"] if existing else rid,
                existing["name"] if existing else name,
                location,
                body.get("tags") or {},
                models.vault_properties(requested, tenant_id, name, existing),
                system_data(existing, caller),
            )
            ctx.store.put_resource(vault)
        return json_response(vault, 200 if existing else 201)

    async def patch_vault(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        vault = load(request, WRITE, sub, rg, name)
        body = await json_body(request)
        merged = {**vault["properties"], **(body.get("properties") or {})}
        vault["properties"] = models.vault_properties(merged, ctx.settings.tenant_id, name, vault)
        if body.get("tags") is not None:
            vault["tags"] = body["tags"]
        vault["systemData"] = system_data(vault, request.state.caller)
        ctx.store.put_resource(vault)
        return json_response(vault)

    async def get_vault(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(load(request, READ, sub, rg, name))

    async def delete_vault(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, DELETE, vault_id(rg, name))
        resource_group_or_404(ctx, sub, rg)
        vault = ctx.store.get_resource(vault_id(rg, name))
        if vault is None:
            return empty(204)
        delete_tree(ctx, vault["id"])
        return empty(200)

    async def list_in_group(request: Request, sub: str, rg: str) -> Response:
        require_api_version(request)
        group = resource_group_or_404(ctx, sub, rg)
        found = ctx.store.list_resources(type=VAULT_TYPE, parent=group["id"])
        return json_response(list_page(readable(request, found)))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        found = ctx.store.list_resources(type=VAULT_TYPE)
        return json_response(list_page(readable(request, found)))

    def deleted_or_404(name: str, location: str) -> dict[str, Any]:
        record = state.deleted_vault(ctx, name)
        if record is None or record["vault"]["location"] != location.replace(" ", "").lower():
            raise not_found(
                "ResourceNotFound",
                f"The Resource '{DELETED_VAULT_TYPE}/{name}' under location '{location}' was "
                "not found.",
            )
        return record

    async def list_deleted(request: Request, sub: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, DELETED_READ, f"/subscriptions/{ctx.subscription_id}")
        items = [
            models.deleted_vault_view(ctx.subscription_id, r) for r in state.deleted_vaults(ctx)
        ]
        return json_response(list_page(items))

    async def get_deleted(request: Request, sub: str, location: str, name: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, DELETED_READ, f"/subscriptions/{ctx.subscription_id}")
        record = deleted_or_404(name, location)
        return json_response(models.deleted_vault_view(ctx.subscription_id, record))

    async def purge_deleted(request: Request, sub: str, location: str, name: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, PURGE, f"/subscriptions/{ctx.subscription_id}")
        record = deleted_or_404(name, location)
        if record["vault"]["properties"].get("enablePurgeProtection"):
            raise conflict(
                "PurgeProtectionEnabled",
                f"The vault '{name}' has purge protection enabled: it cannot be purged before "
                f"{record['scheduledPurgeDate']}.",
            )
        with ctx.store.transaction():
            state.purge_vault_content(ctx, name)
            state.forget_deleted_vault(ctx, name)
        return empty(200)

    sub_prefix = f"/subscriptions/{{sub}}/providers/{NAMESPACE}"
    rg_prefix = f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{NAMESPACE}"
    one = rg_prefix + "/vaults/{name}"
    deleted = sub_prefix + "/locations/{location}/deletedVaults/{name}"
    router.add("POST", sub_prefix + "/checkNameAvailability", check_name)
    router.add("GET", sub_prefix + "/vaults", list_in_subscription)
    router.add("GET", sub_prefix + "/deletedVaults", list_deleted)
    router.add("GET", deleted, get_deleted)
    router.add("POST", deleted + "/purge", purge_deleted)
    router.add("GET", rg_prefix + "/vaults", list_in_group)
    router.add("PUT", one, put_vault)
    router.add("GET", one, get_vault)
    router.add("PATCH", one, patch_vault)
    router.add("DELETE", one, delete_vault)
