# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The order in which tasks are handed out: longest expected first.

With chunks handed out as workers free up, the finish time is set by the last tasks handed out;
starting with the long ones and ending with the short ones (the LPT rule) keeps the tail short.
Expected durations come from what this run has already measured per domain (earlier sessions
in the ledger), else from the task-complexity profiles of the evaluation guide: LibreOffice and
coding tasks are complex, browser/file/media tasks medium, Windows utilities simple.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import median

# Relative weights from the guide's profiles ("simple": notepad, settings; "medium":
# file_explorer, chrome; "complex": libreoffice, coding), extended to WAA's other domains.
DOMAIN_WEIGHTS: dict[str, float] = {
    "libreoffice_calc": 3.0,
    "libreoffice_writer": 3.0,
    "vs_code": 3.0,
    "chrome": 2.0,
    "msedge": 2.0,
    "file_explorer": 2.0,
    "vlc": 2.0,
    "microsoft_paint": 1.5,
    "settings": 1.0,
    "notepad": 1.0,
    "clock": 1.0,
    "windows_calc": 1.0,
}
DEFAULT_WEIGHT = 2.0


def expected_durations(
    task_ids: Iterable[str],
    domains: Mapping[str, str | None],
    observed_durations: Mapping[str, Iterable[float]] | None = None,
) -> dict[str, float]:
    """Each task's expected duration: its domain's measured median, else the guide's weight for
    the domain (scaled to the measured domains, so both kinds of estimate compare)."""
    measured = {d: median(v) for d, v in (observed_durations or {}).items() if list(v)}
    if measured:
        known = [(measured[d], DOMAIN_WEIGHTS.get(d, DEFAULT_WEIGHT)) for d in measured]
        per_weight = sum(m for m, _ in known) / sum(w for _, w in known)
    else:
        per_weight = 1.0

    def expected(task_id: str) -> float:
        domain = domains.get(task_id) or ""
        if domain in measured:
            return measured[domain]
        return DOMAIN_WEIGHTS.get(domain, DEFAULT_WEIGHT) * per_weight

    return {task_id: expected(task_id) for task_id in task_ids}


def longest_first(
    task_ids: Iterable[str],
    domains: Mapping[str, str | None],
    observed_durations: Mapping[str, Iterable[float]] | None = None,
) -> list[str]:
    """``task_ids`` sorted by expected duration, longest first (stable for equal estimates)."""
    ordered = list(task_ids)
    expected = expected_durations(ordered, domains, observed_durations)
    return sorted(ordered, key=expected.__getitem__, reverse=True)
