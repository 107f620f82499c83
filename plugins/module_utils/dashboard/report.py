# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dashboard's page as one self-contained HTML file: its style, the vendored chart library
and the page's script inlined, and the run's final status embedded, so the report opens
anywhere, offline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.dashboard.server import ASSETS


def _between(page: str, marker: str, replacement: str) -> str:
    pattern = re.compile(rf"<!--{marker}-->.*?<!--/{marker}-->", re.DOTALL)
    return pattern.sub(lambda _: replacement, page, count=1)


def _inline_script(text: str) -> str:
    return "<script>" + text.replace("</script", "<\\/script") + "</script>"


def render_report(status: dict[str, Any]) -> str:
    page = (ASSETS / "dashboard.html").read_text(encoding="utf-8")
    style = (ASSETS / "dashboard.css").read_text(encoding="utf-8")
    chart = (ASSETS / "vendor" / "chart.js" / "chart.umd.min.js").read_text(encoding="utf-8")
    script = (ASSETS / "dashboard.js").read_text(encoding="utf-8")
    data = json.dumps(status, default=str).replace("</", "<\\/")
    page = _between(page, "STYLE", f"<style>{style}</style>")
    page = page.replace(
        "<!--DATA-->", f'<script id="dashboard-data" type="application/json">{data}</script>'
    )
    return _between(page, "SCRIPT", _inline_script(chart) + _inline_script(script))


def write_report(status_file: str | Path, target: str | Path) -> Path:
    status = json.loads(Path(status_file).read_text(encoding="utf-8"))
    path = Path(target)
    path.write_text(render_report(status), encoding="utf-8")
    return path
