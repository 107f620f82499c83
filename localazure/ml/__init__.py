"""Azure Machine Learning: workspaces, AmlCompute clusters, environments, command jobs and the
run-history service, with jobs run on the shared simulated nodes (``localazure.nodes``, see ``job_runner``)."""

from __future__ import annotations

import re

NAMESPACE = "Microsoft.MachineLearningServices"
WORKSPACE_TYPE = f"{NAMESPACE}/workspaces"
COMPUTE_TYPE = f"{WORKSPACE_TYPE}/computes"
ENVIRONMENT_TYPE = f"{WORKSPACE_TYPE}/environments"
ENVIRONMENT_VERSION_TYPE = f"{ENVIRONMENT_TYPE}/versions"
JOB_TYPE = f"{WORKSPACE_TYPE}/jobs"

# Route prefixes (the router matches them case-insensitively).
RG_PREFIX = f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{NAMESPACE}"
WORKSPACE_PATH = RG_PREFIX + "/workspaces/{workspace}"

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)


def parse_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration such as ``PT2M`` or ``PT120S``; raise ``ValueError``."""
    match = _DURATION.match(text.strip()) if text else None
    if not match or not any(match.groupdict().values()):
        raise ValueError(f"'{text}' is not an ISO 8601 duration such as PT120S")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
