"""What Azure's Shared Key scheme signs in every service that uses it (Blob, Batch, ...)."""

from __future__ import annotations

# The standard headers, in the order the string to sign lists their values.
SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
