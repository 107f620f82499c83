"""The synthetic WAA task set and the stand-in's duration and success models.

Everything here is a pure function of (seed, task_id): the stand-in, the emulator and the
benchmark all compute the same duration and outcome for a task without sharing state.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

DATA_DIR = Path(__file__).parent / "data"
SYNTHETIC_TEST_ALL = DATA_DIR / "waa_synthetic_test_all.json"
DEFAULT_TIME_SCALE = 0.05  # seconds of real sleep per simulated minute of WAA time
DEFAULT_SEED = 0

# Task counts per domain of WAA's 154-task test set.
DOMAIN_COUNTS: dict[str, int] = {
    "chrome": 17,
    "clock": 4,
    "file_explorer": 19,
    "libreoffice_calc": 24,
    "libreoffice_writer": 19,
    "microsoft_paint": 3,
    "msedge": 13,
    "notepad": 2,
    "settings": 5,
    "vlc": 21,
    "vs_code": 24,
    "windows_calc": 3,
}


@dataclass(frozen=True)
class DomainModel:
    """Task duration is log-normal around ``median_minutes`` (spread ``sigma``), which gives
    a long right tail of stragglers; the outcome is a success with ``success_rate``."""

    median_minutes: float
    sigma: float
    success_rate: float


MIN_MINUTES = 1.5
MAX_MINUTES = 45.0

DOMAIN_MODELS: dict[str, DomainModel] = {
    "chrome": DomainModel(7.0, 0.45, 0.35),
    "clock": DomainModel(3.5, 0.35, 0.55),
    "file_explorer": DomainModel(6.0, 0.45, 0.40),
    "libreoffice_calc": DomainModel(11.0, 0.55, 0.15),
    "libreoffice_writer": DomainModel(10.0, 0.55, 0.20),
    "microsoft_paint": DomainModel(5.0, 0.40, 0.30),
    "msedge": DomainModel(7.0, 0.45, 0.35),
    "notepad": DomainModel(3.0, 0.35, 0.60),
    "settings": DomainModel(4.5, 0.40, 0.45),
    "vlc": DomainModel(6.5, 0.45, 0.30),
    "vs_code": DomainModel(11.0, 0.55, 0.25),
    "windows_calc": DomainModel(3.5, 0.35, 0.50),
}
FALLBACK_MODEL = DomainModel(7.0, 0.5, 0.3)

_STANDARD_NORMAL = NormalDist()


def _unit(seed: int, task_id: str, purpose: str) -> float:
    """A uniform number in (0, 1) determined by (seed, task_id, purpose) alone."""
    digest = hashlib.sha256(f"{seed}:{task_id}:{purpose}".encode()).digest()
    value = int.from_bytes(digest[:8], "big")
    return (value + 0.5) / 2**64


def model_for(domain: str) -> DomainModel:
    return DOMAIN_MODELS.get(domain, FALLBACK_MODEL)


def modelled_minutes(domain: str, task_id: str, seed: int = DEFAULT_SEED) -> float:
    """Simulated WAA duration of the task, in minutes."""
    model = model_for(domain)
    z = _STANDARD_NORMAL.inv_cdf(_unit(seed, task_id, "duration"))
    minutes = model.median_minutes * math.exp(model.sigma * z)
    return min(MAX_MINUTES, max(MIN_MINUTES, minutes))


def modelled_duration_s(
    domain: str,
    task_id: str,
    time_scale: float = DEFAULT_TIME_SCALE,
    seed: int = DEFAULT_SEED,
) -> float:
    """Real seconds the stand-in sleeps for the task at ``time_scale`` s per simulated minute."""
    return modelled_minutes(domain, task_id, seed) * time_scale


def modelled_success(domain: str, task_id: str, seed: int = DEFAULT_SEED) -> bool:
    return _unit(seed, task_id, "outcome") < model_for(domain).success_rate


def load_test_all(path: str | Path = SYNTHETIC_TEST_ALL) -> dict[str, list[str]]:
    """A WAA test_all.json: domain -> list of task ids."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path} is not a WAA test_all.json (domain -> list of task ids)")
    return {str(domain): [str(t) for t in ids] for domain, ids in data.items()}


def list_tasks(path: str | Path = SYNTHETIC_TEST_ALL) -> list[tuple[str, str]]:
    """(domain, task_id) pairs in file order."""
    return [(domain, task_id) for domain, ids in load_test_all(path).items() for task_id in ids]


def task_durations(
    path: str | Path = SYNTHETIC_TEST_ALL,
    time_scale: float = DEFAULT_TIME_SCALE,
    seed: int = DEFAULT_SEED,
) -> dict[str, float]:
    """task_id -> modelled real seconds, for every task of the set."""
    return {
        task_id: modelled_duration_s(domain, task_id, time_scale, seed)
        for domain, task_id in list_tasks(path)
    }


def synthetic_task_id(domain: str, index: int) -> str:
    """A WAA-shaped id (uuid4 layout plus ``-WOS``) derived from (domain, index)."""
    digest = hashlib.sha256(f"waa-synthetic:{domain}:{index}".encode()).digest()
    return f"{uuid.UUID(bytes=digest[:16], version=4)}-WOS"


def generate_synthetic_test_all() -> dict[str, list[str]]:
    """The content of ``data/waa_synthetic_test_all.json`` (generated once, then frozen)."""
    return {
        domain: [synthetic_task_id(domain, i) for i in range(count)]
        for domain, count in DOMAIN_COUNTS.items()
    }
