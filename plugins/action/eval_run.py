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
import time
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.openadapt.azure_eval.plugins.module_utils import (
    action_env,
    eval_inputs,
    rightsizing,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.budget import (
    Budget,
    BudgetReached,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.credentials import (
    AUTH_ARGUMENT_SPEC,
)
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
from ansible_collections.openadapt.azure_eval.plugins.module_utils.retries import (
    TENACITY_IMPORT_ERROR,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_lock import RunLocked
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_summary import (
    ledger_summary,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_watch_setup import (
    run_watch_for,
    start_dashboard,
    watch_report,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.scale_down import nodes_left
from ansible_collections.openadapt.azure_eval.plugins.module_utils.startup_checks import (
    DEFAULT_VM_BOOT_TIMEOUT_S,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier_pool import TierPool
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier_report import tier_report
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import registry
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    TierContext,
    TierSpec,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.warm_pool import (
    WarmsPool,
    warm_pool,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_count import (
    CHOICES,
    calculate_optimal_workers,
    measured_minutes,
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
    vm_boot_timeout=dict(type="float", default=DEFAULT_VM_BOOT_TIMEOUT_S),
    # Scale to the workers and check every node (image pulled, golden image there) first.
    warm_pool=dict(type="bool", default=False),
    warm_pool_timeout=dict(type="float", default=900),
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
    **AUTH_ARGUMENT_SPEC,
    # The tier's own options, checked against the argument spec its module registers.
    tier_options=dict(type="dict", default={}),
    # Check every input (the task set read and the selection made) and stop there.
    check_only=dict(type="bool", default=False),
    # The names the user set the options by (roles/eval: workers -> eval_workers), for messages.
    variable_names=dict(type="dict", default={}),
    # The alert rules' thresholds (alerts/rules.py, roles/eval: eval_alert_*), where they go
    # (webhook URLs and SMTP passwords are credentials), the node metrics and the dashboard.
    alert_thresholds=dict(type="dict", default={}),
    alert_notifications=dict(type="dict", default={}, no_log=True),
    metrics=dict(type="bool", default=True),
    metrics_interval=dict(type="float", default=60),
    metrics_grain=dict(type="float", default=60),
    dashboard=dict(type="bool", default=True),
    dashboard_port=dict(type="int", default=0),
    # Cost controls (budget.py, worker_count.py, rightsizing.py, scale_down.py).
    budget_usd=dict(type="float"),
    budget_warn_fraction=dict(type="float", default=0.8),
    budget_cancel_running=dict(type="bool", default=False),
    workers_choice=dict(type="str", default="fixed", choices=list(CHOICES)),
    target_hours=dict(type="float", default=2.0),
    right_sizing=dict(type="bool", default=False),
    task_profile=dict(type="raw", default="default"),
    scale_down_wait=dict(type="float", default=0.0),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if TENACITY_IMPORT_ERROR:
            raise AnsibleActionFail(
                missing_required_lib("tenacity"), orig_exc=TENACITY_IMPORT_ERROR
            )
        _valid, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        spec = registry.get(args["tier"])
        tasks, errors = eval_inputs.check(args, args["variable_names"])
        if errors:
            raise AnsibleActionFail(
                "the evaluation cannot run as set; nothing was created: " + "; ".join(errors)
            )
        if args["check_only"]:
            pending = _pending(Path(args["state_dir"]) / args["run_name"], tasks, args)
            result.update(
                changed=False,
                tasks=len(tasks),
                pending=pending,
                msg=f"{len(tasks)} tasks, {pending} without a result yet",
            )
            return result
        args["tier_options"] = _tier_options(spec, args["tier_options"])
        if self._task.check_mode:
            pending = _pending(Path(args["state_dir"]) / args["run_name"], tasks, args)
            result.update(
                changed=pending > 0,
                skipped=False,
                tasks=len(tasks),
                pending_tasks=pending,
                msg=f"check mode: {pending} of {len(tasks)} tasks would run"
                + ("" if pending else " (the ledger holds every result)"),
            )
            return result
        run_dir = Path(args["state_dir"]) / args["run_name"]
        run_dir.mkdir(parents=True, exist_ok=True)

        environment = action_env.task_environment(self._task, self._templar)
        # SDK notices (azure-ai-ml writes some to stderr itself) are shown at -vvv.
        with (
            action_env.applied(environment),
            _logging_to_display(),
            redirect_stderr(_DisplayStream(True)),
            contextlib.ExitStack() as stack,
        ):
            try:
                tier = spec.build(self._tier_context(args, environment, run_dir))
            except spec.setup_errors as err:
                raise AnsibleActionFail(str(err)) from None
            try:
                workers, choice = self._cost_controls(args, tier, tasks)
                watch = run_watch_for(args, tier, tasks, display)
            except (ValueError, KeyError, TypeError) as err:
                tier.close()
                raise AnsibleActionFail(
                    f"the evaluation's settings are not valid; nothing was created: {err}"
                ) from None
            config = EngineConfig(
                workers=workers,
                poll_interval=args["poll_interval"],
                startup_timeout=args["startup_timeout"],
                vm_boot_timeout=args["vm_boot_timeout"],
                stuck_after=args["stuck_after"],
                max_attempts=args["max_attempts"],
                scheduling=args["scheduling"],
                price_per_node_hour=tier.price_per_node_hour,
                run_id=args["run_name"],
                config_fingerprint=config_fingerprint(_fingerprinted(spec, args)),
                selection_fingerprint=config_fingerprint(_selection(args)),
                status_file=run_dir / "status.json",
                # Ansible's worker runs in a session of its own: a SIGKILL of ansible-playbook
                # would not reach it.
                watch_parent=True,
                watch=watch,
                budget=_budget(args),
            )
            engine = EvaluationEngine(
                tier,
                tasks,
                run_dir / "ledger.sqlite3",
                config,
                progress=_progress(len(tasks), stack),
            )
            since_command = _seconds_since_command()
            if choice is not None:
                display.display(
                    f"eval_run: worker count ({args['workers_choice']}): {choice.arithmetic}"
                )
            display.display(
                f"eval_run: {len(tasks)} tasks on {engine.workers} {args['tier']} workers "
                f"({args['scheduling']} scheduling); ledger {run_dir / 'ledger.sqlite3'}"
                + (
                    f"; the engine starts {since_command:.1f}s after the command"
                    if since_command is not None
                    else ""
                )
            )
            warm = None
            dashboard = start_dashboard(args, run_dir / "status.json", display)
            if watch.metrics is not None:
                display.display(
                    f"eval_run: node metrics from Azure Monitor every {watch.metrics.interval_s:g}s "
                    f"({watch.metrics.requests_per_minute:.2f} request(s) per minute)"
                )
            extras = {"worker_choice": choice.to_dict() if choice else None}
            try:
                with _interruptible():
                    if args["warm_pool"]:
                        warm = self._warm_pool(tier, args)
                    run = engine.run()
            except KeyboardInterrupt:
                # ansible-playbook itself only says "User interrupted execution".
                display.display(
                    f"eval_run: interrupted; every job this run started was cancelled and every "
                    f"result so far is in {run_dir / 'ledger.sqlite3'}: run the same command to "
                    "resume",
                    stderr=True,
                )
                return self._failed(
                    result,
                    run_dir,
                    "interrupted: every job this run started was cancelled; run the same command "
                    "to resume",
                    self._after_run(args, tier, run_dir, extras, config),
                )
            except PermanentFailure as err:
                extras = self._after_run(args, tier, run_dir, extras, config)
                return self._failed(result, run_dir, err.failure.describe(), extras)
            except (TierUnhealthy, BudgetReached) as err:
                extras = self._after_run(args, tier, run_dir, extras, config)
                return self._failed(result, run_dir, str(err), extras)
            except RunLocked as err:
                raise AnsibleActionFail(str(err)) from None
            except LedgerMismatch as err:
                raise AnsibleActionFail(
                    f"{err}. Use another run_name for a different evaluation, or delete {run_dir}."
                ) from None
            else:
                extras = self._after_run(args, tier, run_dir, extras, config, run.cost.node_hours)
            finally:
                watch.close()
                if dashboard is not None:
                    dashboard.stop()
                tier.close()
        evaluation = {**run.to_dict(), **extras}
        if warm is not None:
            evaluation["warm_pool"] = warm.to_dict()
        evaluation.update(watch_report(watch))
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

    def _warm_pool(self, tier, args):
        if not isinstance(tier, WarmsPool):
            raise AnsibleActionFail(
                f"eval_warm_pool: tier {args['tier']} cannot warm a pool; set it false"
            )
        report = warm_pool(
            tier,
            args["workers"],
            args["run_name"],
            timeout=args["warm_pool_timeout"],
            poll_interval=args["poll_interval"],
        )
        summary = report.to_dict()
        unhealthy = ", ".join(summary["unhealthy_nodes"])
        display.display(
            f"eval_run: warm pool of {summary['scaled_to']} nodes in {summary['ready_s']:.1f}s: "
            f"{summary['healthy']} healthy" + (f", unhealthy: {unhealthy}" if unhealthy else "")
        )
        return report

    def _tier_context(self, args, environment, run_dir):
        job_env = dict(args["environment_variables"])
        job_env["HEARTBEAT_INTERVAL"] = str(args["heartbeat_interval"])
        # The worker bounds a restart of the VM inside the container by the same limit.
        job_env["WAA_VM_BOOT_TIMEOUT"] = str(args["vm_boot_timeout"])
        return TierContext(
            options=args["tier_options"],
            environment={**os.environ, **environment, **action_env.auth_environment(args)},
            run_name=args["run_name"],
            worker_script=WORKER_SCRIPT.read_text(),
            state_dir=run_dir,
            job_environment=job_env,
            secret_environment=args["secret_environment_variables"],
            job_timeout=args["job_timeout"],
        )

    def _cost_controls(self, args, tier, tasks):
        """Right-sizing set up on the pool, and the worker count (fixed, advised or chosen)."""
        domains = [domain for domain, _task_id in tasks]
        if args["right_sizing"]:
            if not isinstance(tier, TierPool) or not tier.member_sizes:
                raise ValueError(
                    "eval_right_sizing needs tier=auto with members of different sizes "
                    "(eval_tier_members: <name>: {sizes: [simple, medium]} ...)"
                )
            tier.use_sizes(
                rightsizing.TaskClasses(
                    {task: domain for domain, task in tasks}, self._profile(args)
                )
            )
        if args["workers_choice"] == "fixed":
            return args["workers"], None
        choice = calculate_optimal_workers(
            domains,
            args["target_hours"],
            _quota(tier, args["workers"]),
            measured_minutes(sorted(Path(args["state_dir"]).glob("*/ledger.sqlite3"))),
        )
        return (choice.workers if args["workers_choice"] == "choose" else args["workers"]), choice

    def _profile(self, args):
        profile = args["task_profile"]
        if profile in (None, "", "default"):
            return rightsizing.DEFAULT_PROFILE
        if profile == "measured":
            return rightsizing.profile_from_ledgers(
                sorted(Path(args["state_dir"]).glob("*/ledger.sqlite3"))
            )
        if isinstance(profile, dict):
            return rightsizing.check_profile(profile)
        raise ValueError(
            "eval_task_profile must be 'default', 'measured' or {simple|medium|complex: "
            f"[domain patterns]}}, not {profile!r}"
        )

    def _after_run(self, args, tier, run_dir, extras, config, node_hours=None):
        """However the run ended: every tier back to zero nodes (checked), and what the report
        says of the tiers, the budget and the worker count."""
        left = nodes_left(tier, wait_s=args["scale_down_wait"])
        if node_hours is None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                status = json.loads((run_dir / "status.json").read_text())
                price = tier.price_per_node_hour or 0
                node_hours = status["cost"]["current_usd"] / price if price else 0.0
        report = dict(extras)
        report["scale_to_zero"] = {
            "nodes_left": left,
            "ok": not any(left.values()),
            "waited_s": args["scale_down_wait"],
        }
        report.update(tier_report(tier, run_dir / "ledger.sqlite3", node_hours or 0.0))
        if config.budget is not None:
            report.update(config.budget.status())
        return report

    def _failed(self, result, run_dir, message, extras=None):
        partial = ledger_summary(run_dir / "ledger.sqlite3", RunStatus.FAILED.value)
        with contextlib.suppress(OSError, ValueError, KeyError):
            status = json.loads((run_dir / "status.json").read_text())
            if partial and status.get("alerts"):
                partial["alerts"] = status["alerts"]
        if partial:
            # The figure the engine wrote last (the same the progress lines showed).
            with contextlib.suppress(OSError, ValueError, KeyError):
                status = json.loads((run_dir / "status.json").read_text())
                partial["cost"] = {"total_usd": status["cost"]["current_usd"]}
        if partial is not None and extras:
            partial.update(extras)
        result.update(
            failed=True, msg=message, evaluation=partial, ledger=str(run_dir / "ledger.sqlite3")
        )
        return result


def _budget(args):
    if args.get("budget_usd") is None:
        return None
    try:
        return Budget(
            limit_usd=args["budget_usd"],
            warn_fraction=args["budget_warn_fraction"],
            cancel_running=args["budget_cancel_running"],
        )
    except ValueError as err:
        raise AnsibleActionFail(str(err)) from None


def _quota(tier, requested):
    """The most workers the tier can run: a pool's members together (spread) or its first's,
    an AML cluster's max_instances, a fixed pool's capacity."""
    if isinstance(tier, TierPool):
        return tier.workers(requested) if tier.mode == "spread" else None
    details = tier.describe()
    quota = details.get("max_instances") or details.get("capacity")
    return int(quota) if quota else None


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


def _progress(total: int, stack: contextlib.ExitStack) -> RunProgress:
    """The rich progress bar on the terminal ansible-playbook writes to, else a line every 15 s
    through Display (an Ansible worker's own stdout is /dev/null, and Display cannot redraw)."""
    terminal = _controller_terminal()
    if terminal is None:
        return RunProgress(total, stream=_DisplayStream(), is_tty=False, plain_interval_s=15)
    stack.callback(terminal.close)
    return RunProgress(total, stream=terminal, is_tty=True)


def _controller_terminal():
    """ansible-playbook's stdout, opened for writing, when it is a terminal (Linux, /proc);
    None otherwise, or with ANSIBLE_NOCOLOR/NO_COLOR set."""
    if os.environ.get("ANSIBLE_NOCOLOR") or os.environ.get("NO_COLOR"):
        return None
    path = os.path.realpath(f"/proc/{os.getppid()}/fd/1")
    if not path.startswith(("/dev/pts/", "/dev/tty")):
        return None
    try:
        terminal = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by the caller)
    except OSError:
        return None
    if not terminal.isatty():
        terminal.close()
        return None
    return terminal


def _fingerprinted(spec: TierSpec, args):
    """What makes a run the same run: the tasks and the tier target, not tuning knobs."""
    return {**_selection(args), spec.name: spec.fingerprint(args["tier_options"])}


def _selection(args):
    """The part of the fingerprint known before any layer runs: the tier and the tasks."""
    return {
        "tier": args["tier"],
        "task_set": os.path.basename(args["task_set"]),
        "task_ids": sorted(args["task_ids"]),
        "domains": sorted(args["domains"]),
        "max_tasks": args["max_tasks"],
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


def _pending(run_dir: Path, tasks: list[tuple[str, str]], args) -> int:
    """Tasks of the selection the run's ledger has no final result for (all of them before the
    first session): a layer that holds nodes for the run (a Batch pool) needs none when 0.

    A ledger made for other tasks is refused here, in the preflight, before any layer makes or
    starts anything (the engine would refuse it only after)."""
    path = run_dir / "ledger.sqlite3"
    if not path.exists():
        return len(tasks)
    with Ledger(path) as ledger:
        recorded = ledger.selection()
        if recorded and recorded != config_fingerprint(_selection(args)):
            raise AnsibleActionFail(
                f"the ledger {path} is of run {args['run_name']!r} with other tasks (another "
                "tier, task set, eval_task_ids, eval_domains or eval_max_tasks); nothing was "
                "created. Run it again with its settings to resume it, or choose another "
                f"eval_run_name for a different evaluation (or delete {run_dir})."
            )
        return len(ledger.pending([task_id for _domain, task_id in tasks]))
