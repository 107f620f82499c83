# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAA task sets: ``test_all.json`` maps each domain to its task ids."""

from __future__ import annotations

import json
from pathlib import Path


def load(path: str | Path) -> list[tuple[str, str]]:
    """(domain, task_id) pairs in file order; raises ValueError on a malformed file."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in data.values()
    ):
        raise ValueError("expected WAA's test_all.json shape: {domain: [task id, ...]}")
    pairs = [(domain, task_id) for domain, ids in data.items() for task_id in ids]
    seen: set[str] = set()
    duplicates = [t for _domain, t in pairs if t in seen or seen.add(t)]
    if duplicates:
        raise ValueError(f"task ids listed twice: {', '.join(sorted(set(duplicates)))}")
    return pairs


def select_tasks(
    path: str | Path,
    task_ids: list[str] | None = None,
    domains: list[str] | None = None,
    max_tasks: int | None = None,
) -> list[tuple[str, str]]:
    """The tasks to run: all of the set, or the named ids/domains, at most ``max_tasks``."""
    pairs = load(path)
    known_domains = {d for d, _task in pairs}
    unknown = sorted(set(domains or ()) - known_domains)
    if unknown:
        raise ValueError(f"unknown domains {unknown}; the set has {sorted(known_domains)}")
    if domains:
        pairs = [p for p in pairs if p[0] in set(domains)]
    if task_ids:
        known_ids = {t for _domain, t in pairs}
        missing = [t for t in task_ids if t not in known_ids]
        if missing:
            raise ValueError(f"task ids not in the set: {', '.join(missing)}")
        wanted = set(task_ids)
        pairs = [p for p in pairs if p[1] in wanted]
    if max_tasks is not None:
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        pairs = pairs[:max_tasks]
    if not pairs:
        raise ValueError("no tasks selected")
    return pairs
