"""The ``docker`` command of an emulated VM (``bin/docker`` on its disk runs this module). It
talks to the emulator's engine for this VM (``docker_engine``) with the agent secret the VM's
disk holds (``var/lib/localazure/agent.json``, mode 0600); credentials of ``docker login`` are
kept in ``~/.docker/config.json`` as Docker keeps them.

Commands: ``login [-u USER] [-p PASS | --password-stdin] REGISTRY``, ``logout REGISTRY``,
``pull IMAGE``, ``images [-q]``, ``run [-d] [--rm] [--name N] [-e K=V|-e K] [--env-file F]
[-v SRC:DST[:ro|rw]] IMAGE [COMMAND...]`` (a bind mount only maps a path to itself: see
``docker_engine.parse_volume``), ``ps [-a] [-q]``, ``logs [-f] CONTAINER``, ``kill CONTAINER...``,
``rm [-f] CONTAINER...``, ``inspect CONTAINER``, ``wait CONTAINER``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import shlex
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT_ENV = "LOCALAZURE_VM_ROOT"


def _agent() -> dict[str, str]:
    root = Path(os.environ.get(ROOT_ENV) or Path(__file__).resolve())
    return json.loads((root / "var" / "lib" / "localazure" / "agent.json").read_text())


class Engine:
    def __init__(self) -> None:
        agent = _agent()
        self.endpoint = agent["endpoint"]
        self.secret = agent["secret"]
        self.context = ssl.create_default_context(cafile=agent["ca"])

    def call(self, op: str, body: dict[str, Any] | None = None, timeout: float = 600) -> dict:
        request = urllib.request.Request(
            f"{self.endpoint}/_localazure/compute/agent/docker/{op}",
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"content-type": "application/json", "authorization": f"Bearer {self.secret}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            payload = json.loads(err.read() or b"{}")
            if "error" in payload and isinstance(payload["error"], str):
                raise SystemExit(_fail(payload["error"], payload.get("code", 1))) from None
            message = (payload.get("error") or {}).get("message", str(err))
            raise SystemExit(_fail(f"Cannot connect to the Docker daemon: {message}", 1)) from None
        except OSError as err:
            raise SystemExit(_fail(f"Cannot connect to the Docker daemon: {err}", 1)) from None


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _config_path() -> Path:
    return Path(os.environ.get("HOME", ".")) / ".docker" / "config.json"


def _config() -> dict[str, Any]:
    path = _config_path()
    return json.loads(path.read_text()) if path.exists() else {"auths": {}}


def _save_config(config: dict[str, Any]) -> None:
    path = _config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)


def _auth_for(image: str) -> dict[str, str] | None:
    first = image.split("/", 1)[0]
    host = first.lower() if "/" in image and ("." in first or ":" in first) else "docker.io"
    entry = _config().get("auths", {}).get(host)
    if not entry:
        return None
    username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return {"username": username, "password": password}


def _env_pairs(values: list[str], files: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    lines = [line for f in files for line in Path(f).read_text().splitlines()]
    for item in lines + values:
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def _pull(engine: Engine, image: str, quiet: bool = False) -> None:
    result = engine.call("pull", {"image": image, "auth": _auth_for(image)})
    if not quiet:
        sys.stdout.write(result["output"])


def _follow(engine: Engine, container: str, follow: bool, attached: bool = False) -> int:
    offset = 0
    while True:
        body = {"container": container, "offset": offset, "attached": attached}
        result = engine.call("logs", body)
        if result["data"]:
            sys.stdout.write(result["data"])
            sys.stdout.flush()
        offset = result["offset"]
        if not follow or (result["status"] not in ("created", "running") and not result["data"]):
            return result["exit_code"] if result["exit_code"] is not None else 0
        if not result["data"]:
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docker")
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login")
    login.add_argument("-u", "--username", default="")
    login.add_argument("-p", "--password")
    login.add_argument("--password-stdin", action="store_true")
    login.add_argument("registry")
    logout = commands.add_parser("logout")
    logout.add_argument("registry")
    pull = commands.add_parser("pull")
    pull.add_argument("-q", "--quiet", action="store_true")
    pull.add_argument("image")
    images = commands.add_parser("images")
    images.add_argument("-q", "--quiet", action="store_true")
    run = commands.add_parser("run")
    run.add_argument("-d", "--detach", action="store_true")
    run.add_argument("--rm", action="store_true")
    run.add_argument("--name")
    run.add_argument("-e", "--env", action="append", default=[])
    run.add_argument("--env-file", action="append", default=[])
    run.add_argument("-v", "--volume", action="append", default=[])
    run.add_argument("image")
    run.add_argument("args", nargs=argparse.REMAINDER)
    ps = commands.add_parser("ps")
    ps.add_argument("-a", "--all", action="store_true")
    ps.add_argument("-q", "--quiet", action="store_true")
    logs = commands.add_parser("logs")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("container")
    for name in ("kill", "rm", "inspect", "wait"):
        sub = commands.add_parser(name)
        if name == "rm":
            sub.add_argument("-f", "--force", action="store_true")
        sub.add_argument("containers", nargs="+")
    args = parser.parse_args(argv)
    engine = Engine()

    if args.command == "login":
        password = sys.stdin.read().strip() if args.password_stdin else args.password
        if password is None:
            return _fail("Error: Cannot perform an interactive login from a non TTY device", 1)
        result = engine.call(
            "login", {"registry": args.registry, "username": args.username, "password": password}
        )
        config = _config()
        token = base64.b64encode(f"{args.username}:{password}".encode()).decode()
        config.setdefault("auths", {})[args.registry.lower()] = {"auth": token}
        _save_config(config)
        sys.stdout.write(result["output"])
    elif args.command == "logout":
        config = _config()
        config.get("auths", {}).pop(args.registry.lower(), None)
        _save_config(config)
        print(f"Removing login credentials for {args.registry}")
    elif args.command == "pull":
        _pull(engine, args.image, args.quiet)
    elif args.command == "images":
        for image in engine.call("images")["images"]:
            repository, _, tag = image["ref"].rpartition(":")
            if args.quiet:
                print(image["digest"][7:19])
            else:
                print(f"{repository}\t{tag}\t{image['digest'][7:19]}\t{image['size']}")
    elif args.command == "run":
        existing = [i["ref"] for i in engine.call("images")["images"]]
        if not any(_same(args.image, ref) for ref in existing):
            print(f"Unable to find image '{args.image}' locally", file=sys.stderr)
            _pull(engine, args.image)
        command = shlex.join(args.args) if args.args else None
        if (
            args.args
            and len(args.args) >= 2
            and args.args[0] in ("bash", "sh")
            and args.args[1] == "-c"
        ):
            command = args.args[2] if len(args.args) > 2 else ""
        result = engine.call(
            "run",
            {
                "image": args.image,
                "name": args.name,
                "env": _env_pairs(args.env, args.env_file),
                "command": command,
                "rm": args.rm,
                "volumes": args.volume,
            },
        )
        if args.detach:
            print(result["id"])
            return 0
        return _follow(engine, result["id"], follow=True, attached=True)
    elif args.command == "ps":
        found = engine.call("ps", {"all": args.all})["containers"]
        for c in found:
            if args.quiet:
                print(c["id"][:12])
            else:
                status = c["status"] if c["exit_code"] is None else f"Exited ({c['exit_code']})"
                print(f"{c['id'][:12]}\t{c['image']}\t{status}\t{c['name']}")
    elif args.command == "logs":
        return _follow(engine, args.container, args.follow)
    elif args.command in ("kill", "rm"):
        for container in args.containers:
            body = {"container": container, "force": getattr(args, "force", False)}
            engine.call(args.command, body)
            print(container)
    elif args.command == "inspect":
        print(
            json.dumps(
                [_inspect_view(engine.call("inspect", {"container": c})) for c in args.containers],
                indent=2,
            )
        )
    elif args.command == "wait":
        for container in args.containers:
            while True:
                state = engine.call("inspect", {"container": container})
                if state["status"] not in ("created", "running"):
                    print(state["exit_code"])
                    break
                time.sleep(0.2)
    return 0


def _iso(ts: float | None) -> str:
    if ts is None:
        return "0001-01-01T00:00:00Z"
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _inspect_view(c: dict[str, Any]) -> dict[str, Any]:
    """A container as ``docker inspect`` prints it (the fields a script reads)."""
    status = "exited" if c["status"] == "removed" else c["status"]
    return {
        "Id": c["id"],
        "Name": "/" + c["name"],
        "Created": _iso(c["created_at"]),
        "Image": c["digest"],
        "Config": {"Image": c["image"], "Cmd": ["bash", "-c", c["command"]]},
        "HostConfig": {"Binds": [_bind(m) for m in c.get("mounts") or []]},
        "Mounts": [
            {
                "Type": "bind",
                "Source": m["source"],
                "Destination": m["destination"],
                "Mode": m["mode"],
                "RW": m["mode"] != "ro",
                "Propagation": "rprivate",
            }
            for m in c.get("mounts") or []
        ],
        "State": {
            "Status": status,
            "Running": status == "running",
            "ExitCode": c["exit_code"] if c["exit_code"] is not None else 0,
            "StartedAt": _iso(c["started_at"]),
            "FinishedAt": _iso(c["finished_at"]),
        },
    }


def _bind(mount: dict[str, Any]) -> str:
    spec = f"{mount['source']}:{mount['destination']}"
    return f"{spec}:{mount['mode']}" if mount["mode"] == "ro" else spec


def _same(wanted: str, ref: str) -> bool:
    def norm(text: str) -> str:
        return text if ":" in text.rsplit("/", 1)[-1] else f"{text}:latest"

    return norm(wanted).removeprefix("docker.io/library/") == norm(ref).removeprefix(
        "docker.io/library/"
    ) or norm(wanted) == norm(ref)


if __name__ == "__main__":
    sys.exit(main())
