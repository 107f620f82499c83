"""The one store: SQLite on disk, so that state survives a restart.

ARM resources live in ``resources`` keyed by their lower-cased id (Azure ids are
case-insensitive); everything else a service keeps (principals, registry content, operations,
faults, runs) lives in ``records`` under a kind of its own. The request log is append-only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    key TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    parent TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_type ON resources(type);
CREATE INDEX IF NOT EXISTS resources_parent ON resources(parent);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS request_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    method TEXT NOT NULL,
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    status INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    request_id TEXT NOT NULL,
    principal TEXT,
    fault TEXT
);
"""


def parent_of(resource_id: str) -> str:
    """The id one level up (``.../resourceGroups/rg/providers/P/t/n`` -> ``.../resourceGroups/rg``
    for top-level resources, the parent resource for child resources)."""
    parts = resource_id.strip("/").split("/")
    lower = [p.lower() for p in parts]
    if "providers" in lower:
        idx = len(lower) - 1 - lower[::-1].index("providers")
        tail = parts[idx + 1 :]
        # namespace, then (type, name) pairs
        if len(tail) > 3:
            return "/" + "/".join(parts[: len(parts) - 2]).lower()
        return "/" + "/".join(parts[:idx]).lower()
    return "/" + "/".join(parts[:-2]).lower()


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes so that no half-made state is ever visible or left behind."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- ARM resources ------------------------------------------------------------------------

    def put_resource(self, body: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
        rid = body["id"]
        with self._lock:
            self._db.execute(
                "INSERT INTO resources(key, type, parent, body, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET body=excluded.body, type=excluded.type",
                (
                    rid.lower(),
                    body["type"].lower(),
                    (parent or parent_of(rid)).lower(),
                    json.dumps(body),
                    time.time(),
                ),
            )
        return body

    def get_resource(self, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM resources WHERE key=?", (resource_id.rstrip("/").lower(),)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def delete_resource(self, resource_id: str) -> bool:
        """Delete a resource and everything below it (Azure deletes children with the parent)."""
        key = resource_id.rstrip("/").lower()
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM resources WHERE key=? OR key LIKE ? ESCAPE '\\'",
                (key, _like_prefix(key + "/")),
            )
        return cur.rowcount > 0

    def list_resources(
        self, *, type: str | None = None, parent: str | None = None, under: str | None = None
    ) -> list[dict[str, Any]]:
        sql, args = "SELECT body FROM resources WHERE 1=1", []
        if type:
            sql += " AND type=?"
            args.append(type.lower())
        if parent:
            sql += " AND parent=?"
            args.append(parent.rstrip("/").lower())
        if under:
            sql += " AND key LIKE ? ESCAPE '\\'"
            args.append(_like_prefix(under.rstrip("/").lower() + "/"))
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at, key", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- other records ------------------------------------------------------------------------

    def put(self, kind: str, key: str, body: Any) -> Any:
        with self._lock:
            self._db.execute(
                "INSERT INTO records(kind, key, body, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(kind, key) DO UPDATE SET body=excluded.body, "
                "updated_at=excluded.updated_at",
                (kind, key, json.dumps(body), time.time()),
            )
        return body

    def get(self, kind: str, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM records WHERE kind=? AND key=?", (kind, key)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def delete(self, kind: str, key: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM records WHERE kind=? AND key=?", (kind, key))
        return cur.rowcount > 0

    def delete_prefix(self, kind: str, prefix: str) -> int:
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM records WHERE kind=? AND key LIKE ? ESCAPE '\\'",
                (kind, _like_prefix(prefix)),
            )
        return cur.rowcount

    def items(self, kind: str, prefix: str = "") -> list[tuple[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, body FROM records WHERE kind=? AND key LIKE ? ESCAPE '\\' "
                "ORDER BY updated_at, key",
                (kind, _like_prefix(prefix)),
            ).fetchall()
        return [(k, json.loads(b)) for k, b in rows]

    def values(self, kind: str, prefix: str = "") -> list[Any]:
        return [v for _, v in self.items(kind, prefix)]

    # -- request log --------------------------------------------------------------------------

    def log_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO request_log(ts, method, host, path, query, status, duration_ms, "
                "request_id, principal, fault) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    entry["ts"],
                    entry["method"],
                    entry["host"],
                    entry["path"],
                    entry["query"],
                    entry["status"],
                    entry["duration_ms"],
                    entry["request_id"],
                    entry.get("principal"),
                    entry.get("fault"),
                ),
            )

    def request_log(self, since: int = 0, limit: int = 10000) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT * FROM request_log WHERE seq > ? ORDER BY seq LIMIT ?", (since, limit)
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- admin --------------------------------------------------------------------------------

    def reset(self, keep_kinds: tuple[str, ...] = ()) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM resources")
            placeholders = ",".join("?" * len(keep_kinds)) or "''"
            self._db.execute(f"DELETE FROM records WHERE kind NOT IN ({placeholders})", keep_kinds)
            self._db.execute("DELETE FROM request_log")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
