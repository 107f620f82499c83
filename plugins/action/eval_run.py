# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run an evaluation on a tier from the controller, with progress on the terminal.

The work is the evaluation engine's (plugins/module_utils/engine.py); this plugin turns task
arguments into an engine and a tier, applies the task's ``environment`` to the SDK clients it
creates, and returns the run's results for the eval_report callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.openadapt.azure_eval.plugins.module_utils import eval_inputs
from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (
    EngineConfig,
    EvaluationEngine,
    TierUnhealthy,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import PermanentFailure
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (
    Ledger,
    LedgerMismatch,
    RunStatus,
    config_fingerprint,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.progress import RunProgress
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_lock import RunLocked
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_summary import (
    ledger_summary,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import registry
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    TierContext,
    TierSpec,
)

display = Display()

COLLECTION_ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = COLLECTION_ROOT / "worker" / "waa_worker.py"

ARGUMENT_SPEC = dict(
    tier=dict(type="str", required=True, choices=registry.names()),
    run_name=dict(type="str", required=True),
    task_set=dict(type="path", required=True),
    task_ids=dict(type="list", elements="str", default=[]),
    domains=dict(type="list", elements="str", default=[]),
    max_tasks=dict(type="int"),
    workers=dict(type="int", default=10),
    scheduling=dict(type="str", default="dynamic", choices=["dynamic", "static"]),
    startup_timeout=dict(type="float", default=600),
    stuck_after=dict(type="float", default=600),
    max_attempts=dict(type="int", default=3),
    poll_interval=dict(type="float", default=10),
    heartbeat_interval=dict(type="float", default=30),
    state_dir=dict(type="path", required=True),
    job_timeout=dict(type="int", default=14400),
    environment_variables=dict(type="dict", default={}),
    secret_environment_variables=dict(type="dict", default={}, no_log=True),
    # Authentication, as azure.azcollection's modules take it (module_defaults fill these in);
    # unset, the AZURE_* environment variables apply.
    client_id=dict(type="str"),
    secret=dict(type="str", no_log=True),
    tenant=dict(type="str"),
    subscription_id=dict(type="str"),
    cloud_environment=dict(type="str"),
    disable_instance_discovery=dict(type="bool"),
    # The tier's own options, checked against the argument spec its module registers.
    tier_options=dict(type="dict", default={}),
    # Check every input (the task set read and the selection made) and stop there.
    check_only=dict(type="bool", default=False),
    # The names the user set the options by (roles/eval: workers -> eval_workers), for messages.
    variable_names=dict(type="dict", default={}),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        spec = registry.get(args["tier"])
        tasks, errors = eval_inputs.check(args, args["variable_names"])
        if errors:
            raise AnsibleActionFail(
                "the evaluation cannot run as set; nothing was created: " + "; ".join(errors)
            )
        if args["check_only"]:
            pending = _pending(Path(args["state_dir"]) / args["run_name"], tasks)
            result.update(
                changed=False,
                tasks=len(tasks),
                pending=pending,
                msg=f"{len(tasks)} tasks, {pending} without a result yet",
            )
            return result
        args["tier_options"] = _tier_options(spec, args["tier_options"])
        if self._task.check_mode:
            result.update(changed=True, skipped=False, msg="check mode: the evaluation would run")
            return result
        run_dir = Path(args["state_dir"]) / args["run_name"]
        run_dir.mkdir(parents=True, exist_ok=True)

        environment = self._task_environment(task_vars)
        # SDK notices (azure-ai-ml writes some to stderr itself) are shown at -vvv.
        with _applied(environment), _logging_to_display(), redirect_stderr(_DisplayStream(True)):
            try:
                tier = spec.build(self._tier_context(args, environment, run_dir))
            except spec.setup_errors as err:
                raise AnsibleActionFail(str(err)) from None
            config = EngineConfig(
                workers=args["workers"],
                poll_interval=args["poll_interval"],
                startup_timeout=args["startup_timeout"],
                stuck_after=args["stuck_after"],
                max_attempts=args["max_attempts"],
                scheduling=args["scheduling"],
                price_per_node_hour=tier.price_per_node_hour,
                run_id=args["run_name"],
                config_fingerprint=config_fingerprint(_fingerprinted(spec, args)),
                status_file=run_dir / "status.json",
                # Ansible's worker runs in a session of its own: a SIGKILL of ansible-playbook
                # would not reach it.
                watch_parent=True,
            )
            engine = EvaluationEngine(
                tier,
                tasks,
                run_dir / "ledger.sqlite3",
                config,
                # Ansible's workers must print through Display (it forwards to the controller's
                # terminal); a live redraw cannot, so progress is a line every 15 s.
                progress=RunProgress(
                    len(tasks), stream=_DisplayStream(), is_tty=False, plain_interval_s=15
                ),
            )
            since_command = _seconds_since_command()
            display.display(
                f"eval_run: {len(tasks)} tasks on {args['workers']} {args['tier']} workers "
                f"({args['scheduling']} scheduling); ledger {run_dir / 'ledger.sqlite3'}"
                + (
                    f"; the engine starts {since_command:.1f}s after the command"
                    if since_command is not None
                    else ""
                )
            )
            try:
                with _interruptible():
                    run = engine.run()
            except KeyboardInterrupt:
                return self._failed(
                    result,
                    run_dir,
                    "interrupted: every job this run started was cancelled; run the same command "
                    "to resume",
                )
            except PermanentFailure as err:
                return self._failed(result, run_dir, err.failure.describe())
            except TierUnhealthy as err:
                return self._failed(result, run_dir, str(err))
            except RunLocked as err:
                raise AnsibleActionFail(str(err)) from None
            except LedgerMismatch as err:
                raise AnsibleActionFail(
                    f"{err}. Use another run_name for a different evaluation, or delete {run_dir}."
                ) from None
            finally:
                tier.close()
        evaluation = run.to_dict()
        result.update(
            changed=run.session_jobs_submitted > 0,
            evaluation=evaluation,
            ledger=str(run_dir / "ledger.sqlite3"),
            status_file=str(run_dir / "status.json"),
            tier_details=tier.describe(),
            engine_started_after_s=since_command,
        )
        (run_dir / "result.json").write_text(json.dumps(evaluation, indent=2, default=str))
        return result

    def _task_environment(self, task_vars):
        environment = {}
        for item in self._task.environment or []:
            templated = self._templar.template(item)
            if isinstance(templated, dict):
                environment.update({str(k): str(v) for k, v in templated.items()})
        return environment

    def _tier_context(self, args, environment, run_dir):
        job_env = dict(args["environment_variables"])
        job_env["HEARTBEAT_INTERVAL"] = str(args["heartbeat_interval"])
        return TierContext(
            options=args["tier_options"],
            environment={**os.environ, **environment, **_auth_environment(args)},
            run_name=args["run_name"],
            worker_script=WORKER_SCRIPT.read_text(),
            state_dir=run_dir,
            job_environment=job_env,
            secret_environment=args["secret_environment_variables"],
            job_timeout=args["job_timeout"],
        )

    def _failed(self, result, run_dir, message):
        partial = ledger_summary(run_dir / "ledger.sqlite3", RunStatus.FAILED.value)
        if partial:
            # The figure the engine wrote last (the same the progress lines showed).
            with contextlib.suppress(OSError, ValueError, KeyError):
                status = json.loads((run_dir / "status.json").read_text())
                partial["cost"] = {"total_usd": status["cost"]["current_usd"]}
        result.update(
            failed=True, msg=message, evaluation=partial, ledger=str(run_dir / "ledger.sqlite3")
        )
        return result


def _tier_options(spec: TierSpec, options):
    """The tier's options, validated against its argument spec (defaults filled in)."""
    checked = ArgumentSpecValidator(dict(spec.argument_spec)).validate(dict(options or {}))
    if checked.error_messages:
        raise AnsibleActionFail(
            f"tier_options of tier {spec.name}: " + "; ".join(checked.error_messages)
        )
    return checked.validated_parameters


def _seconds_since_command():
    """Seconds since ansible-playbook started (this action runs in its worker, a child of it),
    from the process table where there is one (Linux); None elsewhere."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        stat = Path(f"/proc/{os.getppid()}/stat").read_text()
        started_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return max(0.0, time.time() - (boot + started_ticks / ticks))


def _auth_environment(args):
    """The authentication arguments under the environment names the credential helper reads;
    kept in memory, never put into os.environ."""
    names = {
        "client_id": "AZURE_CLIENT_ID",
        "secret": "AZURE_SECRET",
        "tenant": "AZURE_TENANT",
        "subscription_id": "AZURE_SUBSCRIPTION_ID",
        "cloud_environment": "AZURE_CLOUD_ENVIRONMENT",
    }
    return {env: str(args[arg]) for arg, env in names.items() if args.get(arg)}


def _fingerprinted(spec: TierSpec, args):
    """What makes a run the same run: the tasks and the tier target, not tuning knobs."""
    return {
        "tier": args["tier"],
        "task_set": os.path.basename(args["task_set"]),
        "task_ids": sorted(args["task_ids"]),
        "domains": sorted(args["domains"]),
        "max_tasks": args["max_tasks"],
        spec.name: spec.fingerprint(args["tier_options"]),
    }


class _DisplayStream:
    """A text stream whose complete lines go to Ansible's Display (at -vvv with verbose)."""

    def __init__(self, verbose=False):
        self._show = display.vvv if verbose else display.display
        self._partial = ""

    def write(self, text):
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._show(line)
        return len(text)

    def flush(self):
        if self._partial:
            self._show(self._partial)
            self._partial = ""

    def isatty(self):
        return False


class _DisplayLogHandler(logging.Handler):
    """The engine's log records as Ansible output: warnings as warnings, the rest at -vvv."""

    def emit(self, record):
        message = self.format(record)
        if record.levelno >= logging.WARNING:
            display.warning(message)
        else:
            display.vvv(message)


@contextmanager
def _logging_to_display():
    """Route logging through Display for the run (a worker must not write to stdout/stderr),
    and keep the Azure SDKs' own notices (experimental classes, HTTP details) at error level."""
    root, azure = logging.getLogger(), logging.getLogger("azure")
    handler = _DisplayLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = (root.level, azure.level)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    azure.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        azure.setLevel(saved[1])


@contextmanager
def _interruptible():
    """Let Ctrl-C reach the engine as KeyboardInterrupt.

    Ansible's worker process handles SIGINT by killing its own process group at once, which
    would leave the jobs this run started running on the tier; the engine cancels them when it
    sees KeyboardInterrupt, so Python's default handler is put back while it runs."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _applied(environment):
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    # The interpreter start-up hook (localazure_hook.pth, installed by make bootstrap) read the
    # environment before the task's was applied: let it see the task's (host redirection of
    # service data planes, such as a Batch account's endpoint, on the emulator).
    hook = sys.modules.get("localazure.client_hook")
    if hook is not None:
        hook.install()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pending(run_dir: Path, tasks: list[tuple[str, str]]) -> int:
    """Tasks of the selection the run's ledger has no final result for (all of them before the
    first session): a layer that holds nodes for the run (a Batch pool) needs none when 0."""
    path = run_dir / "ledger.sqlite3"
    if not path.exists():
        return len(tasks)
    with Ledger(path) as ledger:
        return len(ledger.pending([task_id for _, task_id in tasks]))
