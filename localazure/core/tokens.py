"""Signed JWT access tokens: issue them at the token endpoint, verify them on every request."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from localazure.core.errors import AzureError

TOKEN_LIFETIME_S = 3600
# Audiences Azure Resource Manager accepts; clients ask for either (see cloud metadata).
ARM_AUDIENCES = ("https://management.core.windows.net", "https://management.azure.com")
ML_AUDIENCES = ARM_AUDIENCES + ("https://ml.azure.com",)


def normalise_audience(aud: str) -> str:
    return aud.rstrip("/").removesuffix("/.default").rstrip("/").lower()


@dataclass(frozen=True)
class Caller:
    """Who made a request, from a verified token."""

    object_id: str
    app_id: str
    tenant_id: str
    kind: str  # ServicePrincipal | ManagedIdentity

    def __str__(self) -> str:
        return self.object_id


class TokenIssuer:
    def __init__(self, key_path: Path, issuer: str, tenant_id: str):
        self.issuer = issuer
        self.tenant_id = tenant_id
        if key_path.exists():
            self._key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        else:
            key_path.parent.mkdir(parents=True, exist_ok=True)
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_path.write_bytes(
                self._key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            key_path.chmod(0o600)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).decode().rstrip("=")

    def issue(
        self,
        *,
        audience: str,
        object_id: str,
        app_id: str,
        kind: str,
        lifetime: int = TOKEN_LIFETIME_S,
    ) -> tuple[str, int]:
        now = int(time.time())
        claims = {
            "aud": audience.removesuffix("/.default"),
            "iss": self.issuer,
            "iat": now,
            "nbf": now - 60,
            "exp": now + lifetime,
            "tid": self.tenant_id,
            "oid": object_id,
            "sub": object_id,
            "appid": app_id,
            "azp": app_id,
            "idtyp": "app",
            "xms_mirid": kind,
            "uti": uuid.uuid4().hex,
            "ver": "2.0",
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        return token, now + lifetime

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def verify(self, authorization: str | None, audiences: tuple[str, ...]) -> Caller:
        """Check signature, expiry and audience; raise the 401 ARM answers otherwise."""
        if not authorization:
            raise _unauthenticated(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            )
        try:
            claims = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"verify_aud": False, "require": ["exp", "aud", "oid"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            expired = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
            raise _unauthenticated(
                "ExpiredAuthenticationToken",
                f"The access token expiry UTC time '{_utc(expired)}' is earlier than current UTC "
                f"time '{_utc(time.time())}'.",
            ) from None
        except jwt.PyJWTError:
            raise _unauthenticated(
                "InvalidAuthenticationToken", "The access token is invalid."
            ) from None
        audience = normalise_audience(str(claims["aud"]))
        if audience not in {normalise_audience(a) for a in audiences}:
            raise _unauthenticated(
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource "
                f"'{claims['aud']}'. It should exactly match with one of the allowed audiences "
                f"{', '.join(repr(a + '/') for a in audiences)}.",
            )
        return Caller(
            object_id=claims["oid"],
            app_id=claims.get("appid", ""),
            tenant_id=claims.get("tid", ""),
            kind=claims.get("xms_mirid", "ServicePrincipal"),
        )


def _utc(ts: float) -> str:
    return time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(ts))


def _unauthenticated(code: str, message: str) -> AzureError:
    return AzureError(
        401,
        code,
        message,
        headers={
            "WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", '
            'error="invalid_token", error_description="The authentication failed."'
        },
    )
