# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One Azure ML job as the aml_job and aml_job_info modules report it."""

from __future__ import annotations

TERMINAL = ("Completed", "Failed", "Canceled")


def job_status(job) -> str:
    status = job.status
    return getattr(status, "value", status)


def get_job(ml, name):
    """The job, or None when the workspace has no job of that name."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return ml.jobs.get(name)
    except ResourceNotFoundError:
        return None


def job_summary(ml, job) -> dict:
    status = job_status(job)
    error = None
    if status == "Failed":
        details = ml.jobs._runs_operations.get_run_details(job.name)
        if details.error and details.error.error:
            inner = getattr(details.error.error, "inner_error", None)
            code = inner.code if inner and inner.code else details.error.error.code
            error = f"{code}: {details.error.error.message}"
    return {
        "name": job.name,
        "status": status,
        "display_name": job.display_name,
        "experiment_name": job.experiment_name,
        "compute": job.compute,
        "environment": str(job.environment) if job.environment else None,
        "studio_url": job.studio_url,
        "error": error,
    }
