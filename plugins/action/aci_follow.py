# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Follow an Azure Container Instances container group from the controller: print its
container's output as it comes, wait for the exit, and report the exit code and the cost.

The container group is deleted when following ends in anything but the container's exit
(Ctrl-C, a failed start, a timeout), so an interrupted run leaves nothing running; after a
normal exit the role deletes it once the outputs are downloaded.

Ctrl-C: the worker that runs an action is in a session of its own, and ansible-playbook exits
on Ctrl-C without waiting for it; the follower notices that its parent is gone (as eval_run's
engine does) and deletes the group then. A SIGINT or SIGTERM that does reach the worker does
the same.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.openadapt.azure_eval.plugins.module_utils import (
    aci_follow,
    action_env,
    arm_cloud,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.credentials import (
    AUTH_ARGUMENT_SPEC,
    MissingCredentials,
    credential_from_env,
    subscription_from_env,
)

ARGUMENT_SPEC = dict(
    resource_group=dict(type="str", required=True),
    name=dict(type="str", required=True),
    container=dict(type="str"),
    poll_interval=dict(type="float", default=1.0),
    timeout=dict(type="float"),
    price_per_vcpu_second=dict(type="float", default=aci_follow.VCPU_SECOND_USD),
    price_per_gb_second=dict(type="float", default=aci_follow.GB_SECOND_USD),
    secrets=dict(type="list", elements="str", default=[], no_log=True),
    **AUTH_ARGUMENT_SPEC,
)

display = Display()


class Interrupted(KeyboardInterrupt):
    pass


@contextmanager
def _interruptible():
    """Ctrl-C and SIGTERM (ansible-playbook forwards both to its worker) become
    ``Interrupted`` here, so the group is deleted before the worker exits."""

    interrupted = []

    def handler(signum, frame):
        # The first signal wins: ansible-playbook follows its SIGINT with a SIGTERM, which
        # must not cut the deletion short; the signals stay ignored until the worker ends.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        interrupted.append(signum)
        raise Interrupted(signal.strsignal(signum))

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not interrupted:
            for sig, old in previous.items():
                signal.signal(sig, old)


@contextmanager
def _shielded():
    """Ignore Ctrl-C and SIGTERM while the group is deleted: ansible-playbook sends SIGTERM to
    its workers as it exits, which must not cut the delete short."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if self._task.check_mode:
            result.update(changed=False, skipped=True, msg="check mode: nothing runs")
            return result
        environment = action_env.task_environment(self._task, self._templar)
        with action_env.applied(environment):
            return self._follow(result, args, {**os.environ, **action_env.auth_environment(args)})

    def _follow(self, result, args, env):
        try:
            credential = credential_from_env(env)
            subscription = subscription_from_env(env)
            base_url = arm_cloud.resource_manager(env.get("AZURE_CLOUD_ENVIRONMENT"))
        except (MissingCredentials, ValueError) as err:
            raise AnsibleActionFail(str(err)) from None
        from azure.mgmt.containerinstance import ContainerInstanceManagementClient

        client = ContainerInstanceManagementClient(
            credential,
            subscription,
            base_url=base_url,
            credential_scopes=[base_url.rstrip("/") + "/.default"],
        )
        group, rg = args["name"], args["resource_group"]
        masks = [s for s in args["secrets"] if s]

        def show(line: str) -> None:
            for value in masks:
                line = line.replace(value, "********")
            display.display(f"[{group}] {line}")

        parent = os.getppid()
        try:
            with _interruptible():
                outcome = aci_follow.follow(
                    client,
                    rg,
                    group,
                    args["container"],
                    show,
                    poll_interval=args["poll_interval"],
                    timeout=args["timeout"],
                    abandoned=lambda: os.getppid() != parent,
                )
        except (Interrupted, aci_follow.Abandoned, aci_follow.GroupFailed, TimeoutError) as err:
            with _shielded():
                _delete(client, rg, group)
            if isinstance(err, Interrupted | aci_follow.Abandoned):
                raise KeyboardInterrupt(str(err)) from None
            raise AnsibleActionFail(f"{err}; the container group was deleted") from None
        output = outcome.output
        for value in masks:
            output = output.replace(value, "********")
        cost = outcome.cost_usd(args["price_per_vcpu_second"], args["price_per_gb_second"])
        result.update(
            changed=True,
            exit_code=outcome.exit_code,
            state=outcome.state,
            output=output,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            billed_seconds=round(outcome.seconds, 3),
            vcpus=outcome.vcpus,
            memory_gb=outcome.memory_gb,
            cost_usd=cost,
        )
        return result


def _delete(client, resource_group: str, name: str) -> None:
    try:
        client.container_groups.begin_delete(resource_group, name).result()
        display.display(f"[{name}] container group deleted")
    except Exception as err:  # noqa: BLE001 - reported, the original error matters more
        display.warning(f"could not delete container group '{name}': {err}")
