"""``Microsoft.ContainerRegistry/registries``: name availability, create/update/get/list/delete
(long-running, as the SDK pollers expect), admin credentials and ``importImage``.

Shapes follow api-version 2023-07-01 (the azure-mgmt-containerregistry default); azcollection's
2021-09-01 client reads the same fields.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr import LOGIN_SUFFIX, NAMESPACE, REGISTRY_TYPE, catalog, images, permissions
from localazure.arm.catalog import check_location, normalise_location
from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    in_subscription,
    now_iso,
    provider_id,
    resource_or_404,
    system_data,
)
from localazure.authorization.access import is_allowed
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, authorization_failed, bad_request, conflict
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.core.tokens import Caller
from localazure.identity import principals

CREDENTIALS_KIND = "acr-credentials"
READ = f"{REGISTRY_TYPE}/read"
WRITE = f"{REGISTRY_TYPE}/write"
DELETE = f"{REGISTRY_TYPE}/delete"
LIST_CREDENTIALS = f"{REGISTRY_TYPE}/listCredentials/action"
REGENERATE_CREDENTIAL = f"{REGISTRY_TYPE}/regenerateCredential/action"
IMPORT_IMAGE = f"{REGISTRY_TYPE}/importImage/action"
CHECK_NAME = f"{NAMESPACE}/checkNameAvailability/read"
# Simulated time per GB of compressed image an import copies (a real import of the 15 GB WAA
# image takes minutes; tests want about a second).
IMPORT_SECONDS_PER_GB_ENV = "LOCALAZURE_ACR_IMPORT_SECONDS_PER_GB"
DEFAULT_IMPORT_SECONDS_PER_GB = 0.06
CREATE_SECONDS_ENV = "LOCALAZURE_ACR_CREATE_SECONDS"

_NAME = re.compile(r"^[a-zA-Z0-9]+$")
SKUS = {"basic": "Basic", "standard": "Standard", "premium": "Premium"}
PASSWORD_NAMES = ("password", "password2")
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
INVALID_NAME_MESSAGE = (
    "Resource names may contain alpha numeric characters only and must be between 5 and 50 "
    "characters."
)
# Properties a client may set, with their JSON types.
_WRITABLE: dict[str, type] = {
    "adminUserEnabled": bool,
    "anonymousPullEnabled": bool,
    "dataEndpointEnabled": bool,
    "publicNetworkAccess": str,
    "networkRuleBypassOptions": str,
    "networkRuleSet": dict,
    "policies": dict,
    "zoneRedundancy": str,
}


# -- validation ---------------------------------------------------------------------------------


def name_is_valid(name: str) -> bool:
    return 5 <= len(name) <= 50 and bool(_NAME.match(name))


def _check_name(name: str) -> None:
    if not name_is_valid(name):
        raise bad_request(
            "ResourceNameInvalid", f"Invalid resource name: '{name}'. {INVALID_NAME_MESSAGE}"
        )


def _sku(spec: Any) -> dict[str, str]:
    name = spec.get("name") if isinstance(spec, dict) else None
    if not name:
        raise bad_request(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'Required property "
            "'sku' (with 'name': Basic, Standard or Premium) not found in JSON.'",
        )
    if str(name).lower() == "classic":
        raise bad_request(
            "ClassicSkuDeprecated",
            "Classic SKU is now deprecated. Please select a managed SKU. Kindly refer to docs for "
            "instructions: https://docs.microsoft.com/en-us/azure/container-registry/"
            "container-registry-upgrade",
        )
    canonical = SKUS.get(str(name).lower())
    if canonical is None:
        raise bad_request(
            "InvalidSkuName",
            f"The SKU '{name}' is not valid for a container registry. Valid SKUs are Basic, "
            "Standard and Premium.",
        )
    return {"name": canonical, "tier": canonical}


def _apply_properties(properties: dict[str, Any], requested: Any) -> None:
    if requested is None:
        return
    if not isinstance(requested, dict):
        raise bad_request("InvalidRequestContent", "'properties' must be a JSON object.")
    for key, value in requested.items():
        expected = _WRITABLE.get(key)
        if expected is None or value is None:
            continue
        if not isinstance(value, expected):
            raise bad_request(
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: property "
                f"'{key}' must be a {expected.__name__}.",
            )
        if key == "policies":
            for policy, settings in value.items():
                if isinstance(settings, dict):
                    properties["policies"].setdefault(policy, {}).update(settings)
        else:
            properties[key] = value


def _default_properties(name: str, stamp: str) -> dict[str, Any]:
    return {
        "loginServer": f"{name.lower()}{LOGIN_SUFFIX}",
        "creationDate": stamp,
        "provisioningState": "Creating",
        "status": None,
        "adminUserEnabled": False,
        "networkRuleSet": {"defaultAction": "Allow", "ipRules": []},
        "policies": {
            "quarantinePolicy": {"status": "disabled"},
            "trustPolicy": {"type": "Notary", "status": "disabled"},
            "retentionPolicy": {"days": 7, "lastUpdatedTime": stamp, "status": "disabled"},
            "exportPolicy": {"status": "enabled"},
            "azureADAuthenticationAsArmPolicy": {"status": "enabled"},
            "softDeletePolicy": {
                "retentionDays": 7,
                "lastUpdatedTime": stamp,
                "status": "disabled",
            },
        },
        "encryption": {"status": "disabled"},
        "dataEndpointEnabled": False,
        "dataEndpointHostNames": [],
        "privateEndpointConnections": [],
        "publicNetworkAccess": "Enabled",
        "networkRuleBypassOptions": "AzureServices",
        "zoneRedundancy": "Disabled",
        "anonymousPullEnabled": False,
    }


def _identity(
    ctx: Context, registry: dict[str, Any], requested: dict[str, Any]
) -> dict[str, Any] | None:
    """The identity block: a system-assigned identity is a real principal of the tenant."""
    kind = str(requested.get("type") or "None")
    normalised = kind.replace(" ", "").lower()
    if normalised == "none":
        return None
    identity: dict[str, Any] = {"type": kind}
    if "systemassigned" in normalised:
        principal_id = (registry.get("identity") or {}).get("principalId")
        if not principal_id:
            principal = principals.create_managed_identity(ctx, registry["name"], registry["id"])
            principal_id = principal["objectId"]
        identity.update({"principalId": principal_id, "tenantId": ctx.settings.tenant_id})
    if "userassigned" in normalised:
        assigned = {}
        for identity_id in requested.get("userAssignedIdentities") or {}:
            props = (ctx.store.get_resource(identity_id) or {}).get("properties", {})
            assigned[identity_id] = {
                key: props[key] for key in ("principalId", "clientId") if key in props
            }
        identity["userAssignedIdentities"] = assigned
    return identity


def _replace_identity(ctx: Context, registry: dict[str, Any], requested: Any) -> None:
    """Apply a requested identity block (absent: keep the current one)."""
    if not isinstance(requested, dict):
        return
    identity = _identity(ctx, registry, requested)
    old_principal = (registry.pop("identity", None) or {}).get("principalId")
    if identity:
        registry["identity"] = identity
    if old_principal and old_principal != (identity or {}).get("principalId"):
        principals.delete(ctx, old_principal)


# -- credentials --------------------------------------------------------------------------------


def _new_password() -> str:
    # ACR admin passwords: 52 characters, ending in "+ACR" and six more.
    body = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(42))
    tail = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(6))
    return f"{body}+ACR{tail}"


def _stored_credentials(ctx: Context, registry_id: str) -> dict[str, str]:
    creds = ctx.store.get(CREDENTIALS_KIND, registry_id.lower())
    if creds is None:
        creds = {name: _new_password() for name in PASSWORD_NAMES}
        ctx.store.put(CREDENTIALS_KIND, registry_id.lower(), creds)
    return creds


def _credentials_result(ctx: Context, registry: dict[str, Any]) -> dict[str, Any]:
    creds = _stored_credentials(ctx, registry["id"])
    return {
        "username": registry["name"],
        "passwords": [{"name": name, "value": creds[name]} for name in PASSWORD_NAMES],
    }


def _require_admin_enabled(registry: dict[str, Any]) -> None:
    if not registry["properties"].get("adminUserEnabled"):
        raise bad_request(
            "UnAuthorizedForCredentialOperations",
            f"Cannot perform credential operations for {registry['id']} as admin user is "
            "disabled. Kindly enable admin user as per docs: https://docs.microsoft.com/en-us/"
            "azure/container-registry/container-registry-authentication#admin-account",
        )


def admin_credentials_match(
    ctx: Context, registry: dict[str, Any], username: str, password: str
) -> bool:
    """True when the admin user is enabled and ``username``/``password`` are its credentials."""
    if not registry["properties"].get("adminUserEnabled"):
        return False
    if username.lower() != registry["name"].lower():
        return False
    creds = _stored_credentials(ctx, registry["id"])
    return any(secrets.compare_digest(password, creds[name]) for name in PASSWORD_NAMES)


def forget_registries(ctx: Context, resource_id: str) -> None:
    """Delete hook: drop the content, credentials and system identity of every registry at or
    below ``resource_id``."""
    key = resource_id.rstrip("/").lower()
    for registry in ctx.store.list_resources(type=REGISTRY_TYPE):
        registry_id = registry["id"].lower()
        if registry_id != key and not registry_id.startswith(key + "/"):
            continue
        images.drop_content(ctx, registry_id)
        ctx.store.delete(CREDENTIALS_KIND, registry_id)
        principal_id = (registry.get("identity") or {}).get("principalId")
        if principal_id:
            principals.delete(ctx, principal_id)


# -- import -------------------------------------------------------------------------------------


def _seconds_per_gb() -> float:
    return float(os.environ.get(IMPORT_SECONDS_PER_GB_ENV, DEFAULT_IMPORT_SECONDS_PER_GB))


def _invalid_import(message: str) -> AzureError:
    return bad_request("InvalidParameters", message)


def _import_source(ctx: Context, caller: Caller, source: Any) -> dict[str, Any]:
    """Where the image comes from: ``{"image": <reference>, "registryId": <emulated registry id,
    or None for a public registry>}``."""
    if not isinstance(source, dict) or not source.get("sourceImage"):
        raise _invalid_import("The import source must name an image in 'source.sourceImage'.")
    source_image = str(source["sourceImage"])
    resource_id, registry_uri = source.get("resourceId"), source.get("registryUri")
    source_registry = None
    if resource_id:
        source_registry = ctx.store.get_resource(resource_id)
        if source_registry is None or source_registry["type"] != REGISTRY_TYPE:
            raise _invalid_import(f"The source registry '{resource_id}' could not be found.")
        registry_host = source_registry["properties"]["loginServer"]
    elif registry_uri:
        registry_host = str(registry_uri).lower().removeprefix("https://").rstrip("/")
    else:
        first = source_image.split("/", 1)[0]
        if "/" not in source_image or not ("." in first or ":" in first):
            raise _invalid_import(
                "Specify the source registry with 'source.registryUri' (for example 'docker.io') "
                "or 'source.resourceId', or give a fully qualified 'source.sourceImage'."
            )
        registry_host = first.lower()
    try:
        ref = images.parse_reference(source_image, default_registry=registry_host)
    except ValueError as err:
        raise _invalid_import(f"Invalid source image: {err}.") from None
    if source_registry is None and images.registry_name_of(ref.registry):
        source_registry = images.find_registry_by_login_server(ctx, ref.registry)
        if source_registry is None:
            raise _invalid_import(f"The source registry '{ref.registry}' could not be found.")
    credentials = source.get("credentials") or {}
    if source_registry is not None:
        # From another registry: its admin credentials, or the caller's own pull right.
        if credentials.get("password"):
            username = str(credentials.get("username", ""))
            if not admin_credentials_match(ctx, source_registry, username, credentials["password"]):
                raise AzureError(
                    401,
                    "Unauthorized",
                    f"The credentials given for the source registry '{ref.registry}' were "
                    "rejected.",
                )
        else:
            if not permissions.permits(ctx, caller.object_id, "pull", source_registry["id"]):
                raise authorization_failed(
                    caller.object_id, permissions.PULL, source_registry["id"]
                )
    return {"image": str(ref), "registryId": source_registry["id"] if source_registry else None}


def _source_manifest(ctx: Context, source: dict[str, Any]) -> dict[str, Any] | None:
    ref = images.parse_reference(source["image"])
    if source["registryId"]:
        return images.find_manifest(ctx, source["registryId"], ref.repository, ref.reference)
    image = catalog.find(ref.registry, ref.repository, ref.reference)
    return image.record() if image else None


def _import_targets(body: dict[str, Any], source_image: str) -> list[dict[str, str | None]]:
    ref = images.parse_reference(source_image)
    default_tag = ref.tag or "latest"
    targets: list[dict[str, str | None]] = []
    tagged = body.get("targetTags") or []
    untagged = body.get("untaggedTargetRepositories") or []
    if not tagged and not untagged:
        tagged = [f"{ref.repository}:{default_tag}"]
    for text in map(str, tagged):
        repository, tag = text, default_tag
        if ":" in text.rsplit("/", 1)[-1]:
            repository, _, tag = text.rpartition(":")
        targets.append({"repository": repository.lower(), "tag": tag or default_tag})
    targets.extend({"repository": str(repo).lower(), "tag": None} for repo in untagged)
    for target in targets:
        if not images.REPOSITORY_NAME.match(target["repository"] or ""):
            raise _invalid_import(f"Invalid target repository name '{target['repository']}'.")
        if target["tag"] and not images.TAG_NAME.match(target["tag"]):
            raise _invalid_import(f"Invalid target tag '{target['tag']}'.")
    return targets


def _existing_target_tags(
    ctx: Context, registry_id: str, targets: list[dict[str, str | None]]
) -> list[str]:
    return [
        f"{t['repository']}:{t['tag']}"
        for t in targets
        if t["tag"] and images.get_tag(ctx, registry_id, t["repository"], t["tag"])
    ]


def _tag_exists(existing: list[str]) -> AzureError:
    return conflict(
        "Conflict",
        f"Tag {', '.join(existing)} already exists in target registry. Use mode 'Force' "
        "(az acr import --force) to overwrite it.",
    )


@operations.on_complete("acr.import")
def _complete_import(ctx: Context, params: dict[str, Any]) -> None:
    registry = ctx.store.get_resource(params["registryId"])
    if registry is None:
        raise AzureError(
            404, "ResourceNotFound", f"The registry '{params['registryId']}' no longer exists."
        )
    manifest = _source_manifest(ctx, params["source"])
    if manifest is None:
        raise _invalid_import(
            f"Import failed for registry {registry['id']}: source image "
            f"{params['source']['image']} not found (manifest unknown). Check that the repository "
            "and the tag or digest exist in the source registry."
        )
    if not params["force"]:
        existing = _existing_target_tags(ctx, registry["id"], params["targets"])
        if existing:
            raise _tag_exists(existing)
    for target in params["targets"]:
        images.put_image(ctx, registry["id"], target["repository"], manifest, target["tag"])


@operations.on_complete("acr.create")
def _complete_create(ctx: Context, params: dict[str, Any]) -> None:
    registry = ctx.store.get_resource(params["id"])
    if registry is not None:
        registry["properties"]["provisioningState"] = "Succeeded"
        ctx.store.put_resource(registry)


@operations.on_complete("acr.delete")
def _complete_delete(ctx: Context, params: dict[str, Any]) -> None:
    delete_tree(ctx, params["id"])


# -- routes -------------------------------------------------------------------------------------


def register(router: Router, ctx: Context) -> None:
    def registry_id(rg: str, name: str) -> str:
        return provider_id(ctx, rg, NAMESPACE, "registries", name)

    def registry_or_404(rg: str, name: str) -> dict:
        """The registry (its route has checked the caller's action on it)."""
        return resource_or_404(ctx, registry_id(rg, name), REGISTRY_TYPE, name, rg)

    def readable(request: Request, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        caller = request.state.caller
        return [r for r in found if is_allowed(ctx, caller.object_id, READ, r["id"])]

    async def check_name(request: Request, sub: str) -> Response:
        require_api_version(request)
        name = str((await json_body(request)).get("name") or "")
        if not name_is_valid(name):
            return json_response(
                {"nameAvailable": False, "reason": "Invalid", "message": INVALID_NAME_MESSAGE}
            )
        if images.find_registry(ctx, name):
            return json_response(
                {
                    "nameAvailable": False,
                    "reason": "AlreadyExists",
                    "message": f"The registry {name} is already in use.",
                }
            )
        return json_response({"nameAvailable": True})

    async def put_registry(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        group = request.state.parent
        _check_name(name)
        body = await json_body(request)
        rid = registry_id(rg, name)
        existing = ctx.store.get_resource(rid)
        caller = request.state.caller
        sku = _sku(body.get("sku"))
        if existing:
            location = normalise_location(body.get("location")) or existing["location"]
            if location != existing["location"]:
                raise conflict(
                    "InvalidResourceLocation",
                    f"The resource '{existing['name']}' already exists in location "
                    f"'{existing['location']}' in resource group '{group['name']}'. A resource "
                    f"with the same name cannot be created in location '{body.get('location')}'. "
                    "Please select a new resource name.",
                )
            # PUT replaces what a client can set; what the service owns is kept.
            kept = existing["properties"]
            properties = _default_properties(existing["name"], kept["creationDate"])
            properties.update({k: kept[k] for k in ("loginServer", "provisioningState")})
            _apply_properties(properties, body.get("properties"))
            existing.update(
                {
                    "sku": sku,
                    "tags": body.get("tags") or {},
                    "properties": properties,
                    "systemData": system_data(existing, caller),
                }
            )
            _replace_identity(ctx, existing, body.get("identity"))
            ctx.store.put_resource(existing)
            return json_response(existing)
        location = check_location(body.get("location"), REGISTRY_TYPE)
        taken = images.find_registry(ctx, name)
        if taken:
            raise conflict(
                "AlreadyInUse",
                f"The registry DNS name {name.lower()}{LOGIN_SUFFIX} is already in use. You can "
                "check if the name is already claimed using following API: https://docs."
                "microsoft.com/en-us/rest/api/containerregistry/registries/checknameavailability",
            )
        properties = _default_properties(name, now_iso())
        _apply_properties(properties, body.get("properties"))
        registry: dict[str, Any] = {
            "sku": sku,
            "type": REGISTRY_TYPE,
            "id": rid,
            "name": name,
            "location": location,
            "tags": body.get("tags") or {},
            "systemData": system_data(None, caller),
            "properties": properties,
        }
        with ctx.store.transaction():
            _replace_identity(ctx, registry, body.get("identity"))
            ctx.store.put_resource(registry)
            _stored_credentials(ctx, rid)
        op = operations.start(
            ctx,
            namespace=NAMESPACE,
            location=location,
            kind="acr.create",
            params={"id": rid},
            duration=float(os.environ.get(CREATE_SECONDS_ENV, "0")),
        )
        return json_response(registry, 201, headers=operations.headers(ctx, op, api_version))

    async def get_registry(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(registry_or_404(rg, name))

    async def patch_registry(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        registry = registry_or_404(rg, name)
        body = await json_body(request)
        if body.get("sku") is not None:
            registry["sku"] = _sku(body["sku"])
        if body.get("tags") is not None:
            registry["tags"] = body["tags"]
        _apply_properties(registry["properties"], body.get("properties"))
        _replace_identity(ctx, registry, body.get("identity"))
        registry["systemData"] = system_data(registry, request.state.caller)
        ctx.store.put_resource(registry)
        return json_response(registry)

    async def delete_registry(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        registry = ctx.store.get_resource(registry_id(rg, name))
        if registry is None:
            return empty(204)
        registry["properties"]["provisioningState"] = "Deleting"
        ctx.store.put_resource(registry)
        return operations.accepted(
            ctx,
            api_version,
            namespace=NAMESPACE,
            location=registry["location"],
            kind="acr.delete",
            params={"id": registry["id"]},
        )

    async def list_in_group(request: Request, sub: str, rg: str) -> Response:
        group = request.state.parent
        found = ctx.store.list_resources(type=REGISTRY_TYPE, parent=group["id"])
        return json_response(list_page(readable(request, found)))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        found = ctx.store.list_resources(type=REGISTRY_TYPE)
        return json_response(list_page(readable(request, found)))

    async def list_credentials(request: Request, sub: str, rg: str, name: str) -> Response:
        registry = registry_or_404(rg, name)
        _require_admin_enabled(registry)
        return json_response(_credentials_result(ctx, registry))

    async def regenerate_credential(request: Request, sub: str, rg: str, name: str) -> Response:
        registry = registry_or_404(rg, name)
        _require_admin_enabled(registry)
        which = str((await json_body(request)).get("name") or "")
        if which not in PASSWORD_NAMES:
            raise bad_request(
                "InvalidParameter",
                f"The password name '{which}' is not valid; use 'password' or 'password2'.",
            )
        creds = _stored_credentials(ctx, registry["id"])
        creds[which] = _new_password()
        ctx.store.put(CREDENTIALS_KIND, registry["id"].lower(), creds)
        return json_response(_credentials_result(ctx, registry))

    async def import_image(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        registry = registry_or_404(rg, name)
        body = await json_body(request)
        mode = str(body.get("mode") or "NoForce")
        if mode.lower() not in ("noforce", "force"):
            raise _invalid_import(f"Invalid import mode '{mode}'; use 'NoForce' or 'Force'.")
        source = _import_source(ctx, request.state.caller, body.get("source"))
        targets = _import_targets(body, source["image"])
        force = mode.lower() == "force"
        if not force:
            existing = _existing_target_tags(ctx, registry["id"], targets)
            if existing:
                raise _tag_exists(existing)
        manifest = _source_manifest(ctx, source)
        size_gb = manifest["imageSize"] / 1e9 if manifest else 0.0
        op = operations.start(
            ctx,
            namespace=NAMESPACE,
            location=registry["location"],
            kind="acr.import",
            params={
                "registryId": registry["id"],
                "source": source,
                "targets": targets,
                "force": force,
            },
            duration=size_gb * _seconds_per_gb(),
        )
        return empty(202, headers=operations.headers(ctx, op, api_version))

    sub_prefix = "/subscriptions/{sub}/providers/Microsoft.ContainerRegistry"
    rg_prefix = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry"
    one = rg_prefix + "/registries/{name}"
    in_sub, in_group = in_subscription(ctx), in_resource_group(ctx)
    scope = "{parent}/providers/" + REGISTRY_TYPE + "/{name}"

    def registry_route(method: str, path: str, handler, action: str) -> None:
        router.add(method, path, handler, parent=in_group, action=action, scope=scope)

    router.add(
        "POST", sub_prefix + "/checkNameAvailability", check_name, parent=in_sub, action=CHECK_NAME
    )
    # Lists hold the registries the caller may read, as in Azure.
    router.add("GET", sub_prefix + "/registries", list_in_subscription, parent=in_sub)
    router.add("GET", rg_prefix + "/registries", list_in_group, parent=in_group)
    registry_route("PUT", one, put_registry, WRITE)
    registry_route("GET", one, get_registry, READ)
    registry_route("PATCH", one, patch_registry, WRITE)
    registry_route("DELETE", one, delete_registry, DELETE)
    registry_route("POST", one + "/listCredentials", list_credentials, LIST_CREDENTIALS)
    registry_route(
        "POST", one + "/regenerateCredential", regenerate_credential, REGENERATE_CREDENTIAL
    )
    registry_route("POST", one + "/importImage", import_image, IMPORT_IMAGE)
