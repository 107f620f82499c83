# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``next_windows_rebuild``: the next monthly rebuild of the Windows images, the second
Wednesday of the month (today's counts), from a date (``YYYY-MM-DD``)."""

from __future__ import annotations

import datetime as dt

from ansible.errors import AnsibleFilterError

from ansible_collections.openadapt.azure_eval.plugins.module_utils.image_release import (
    next_rebuild,
)


def next_windows_rebuild(today: str) -> str:
    try:
        day = dt.date.fromisoformat(str(today))
    except ValueError:
        raise AnsibleFilterError(
            f"next_windows_rebuild needs a YYYY-MM-DD date, not {today!r}"
        ) from None
    return next_rebuild(day).isoformat()


class FilterModule:
    def filters(self):
        return {"next_windows_rebuild": next_windows_rebuild}
