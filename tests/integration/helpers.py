"""Run the collection the way users do (ansible-playbook against the lab inventory) and read the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A console script of the venv that runs the tests (ansible-playbook, ansible-galaxy, ...)."""
    return str(BIN / name) if (BIN / name).exists() else name


def ansible_env() -> dict:
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "tests" / "ansible.cfg"))
    return env


@dataclass
class PlaybookRun:
    rc: int
    data: dict
    stderr: str
    stdout: str = ""
    tasks: list = field(default_factory=list)

    def task(self, name_part: str, host: str | None = None) -> dict:
        """The result of the last task whose name contains `name_part` (on `host`, or the only host)."""
        for task in reversed(self.tasks):
            if name_part in task["task"]["name"]:
                hosts = task["hosts"]
                if host is None:
                    if len(hosts) != 1:
                        raise AssertionError(f"task {name_part!r} ran on {list(hosts)}; name a host")
                    return next(iter(hosts.values()))
                return hosts[host]
        raise AssertionError(f"no task named like {name_part!r}; tasks: {[t['task']['name'] for t in self.tasks]}; "
                             f"rc={self.rc}; stderr: {self.stderr[-2000:]}")

    @property
    def changed(self) -> int:
        return sum(s.get("changed", 0) for s in self.data.get("stats", {}).values())

    @property
    def failed(self) -> bool:
        return self.rc != 0


class Ansible:
    def __init__(self, inventory: Path):
        self.inventory = inventory

    def env(self) -> dict:
        env = ansible_env()
        env.update({
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            # set_stats data (what a workflow's next node gets) in the JSON recap.
            "ANSIBLE_SHOW_CUSTOM_STATS": "1",
            # A module that raises brings its traceback into the result, where a failing test shows it.
            "ANSIBLE_DISPLAY_TRACEBACK": "error",
        })
        return env

    def playbook(self, playbook: Path | str, extra_vars: dict | None = None, check: bool = False,
                 diff: bool = False, timeout: int = 900, background: bool = False):
        cmd = [tool("ansible-playbook"), "-i", str(self.inventory), str(playbook)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if background:
            return subprocess.Popen(cmd, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)
        return self.parse(proc.returncode, proc.stdout, proc.stderr)

    @staticmethod
    def parse(rc: int, stdout: str, stderr: str) -> PlaybookRun:
        try:
            data = json.loads(stdout[stdout.index("{"):]) if "{" in stdout else {}
        except json.JSONDecodeError as exc:
            raise AssertionError(f"ansible-playbook output is not JSON ({exc}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
        tasks = [t for play in data.get("plays", []) for t in play.get("tasks", [])]
        return PlaybookRun(rc=rc, data=data, stderr=stderr, stdout=stdout, tasks=tasks)

    def wait(self, proc: subprocess.Popen, timeout: int = 900) -> PlaybookRun:
        out, err = proc.communicate(timeout=timeout)
        return self.parse(proc.returncode, out, err)

    def module(self, host: str, module: str, args: dict, check: bool = False, timeout: int = 900,
               background: bool = False, diff: bool = False):
        """Run one module task on `host`; returns the PlaybookRun (result via .task('probe'))."""
        play = [{
            "name": "probe",
            "hosts": host,
            "gather_facts": False,
            "tasks": [{"name": "probe", module: args, "register": "probe_result"}],
        }]
        fd, path = tempfile.mkstemp(suffix=".yml", prefix="probe-", dir=os.environ.get("TMPDIR", "/tmp"))
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(play, f)
        try:
            return self.playbook(path, check=check, diff=diff, timeout=timeout, background=background)
        finally:
            if not background:
                os.unlink(path)


@dataclass
class RunnerRun(PlaybookRun):
    """A run through ansible-runner: the task results and the recap rebuilt from its event stream."""
    events: list = field(default_factory=list)
    status: str = ""

    @property
    def custom_stats(self) -> dict:
        """The set_stats data in the recap event: what AWX hands to the next node of a workflow."""
        for event in self.events:
            if event.get("event") == "playbook_on_stats":
                return event["event_data"].get("artifact_data") or {}
        return {}


class Runner:
    """Run a playbook through ansible-runner, the engine AWX and Automation Controller use to run a job
    template: the same event stream and artifacts as a job there, with no AWX installed."""

    RESULT_EVENTS = {"runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"}

    def __init__(self, inventory: Path):
        self.inventory = inventory

    def playbook(self, playbook: Path | str, extra_vars: dict, private_data_dir: Path,
                 timeout: int = 900) -> RunnerRun:
        # A test requirement only: imported where it is used.
        import ansible_runner  # pylint: disable=import-outside-toplevel

        env = ansible_env()
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["ANSIBLE_NOCOLOR"] = "1"
        runner = ansible_runner.run(private_data_dir=str(private_data_dir), playbook=str(playbook),
                                    inventory=str(self.inventory), extravars=extra_vars, envvars=env,
                                    timeout=timeout, quiet=True)
        events = list(runner.events)
        tasks, by_uuid, stats = [], {}, {}
        for event in events:
            data = event.get("event_data", {})
            if event["event"] == "playbook_on_task_start":
                by_uuid[data["task_uuid"]] = {"task": {"name": data["task"]}, "hosts": {}}
                tasks.append(by_uuid[data["task_uuid"]])
            elif event["event"] in self.RESULT_EVENTS and data.get("task_uuid") in by_uuid:
                res = dict(data.get("res") or {})
                if event["event"] != "runner_on_ok":
                    res.setdefault("failed", event["event"] != "runner_on_skipped")
                by_uuid[data["task_uuid"]]["hosts"][data["host"]] = res
            elif event["event"] == "playbook_on_stats":
                for key in ("changed", "failures", "ok", "skipped", "dark"):
                    for host, count in (data.get(key) or {}).items():
                        stats.setdefault(host, {})[key] = count
        stdout = "\n".join(e.get("stdout", "") for e in events if e.get("stdout"))
        return RunnerRun(rc=runner.rc, data={"stats": stats}, stderr="", stdout=stdout, tasks=tasks,
                         events=events, status=runner.status)


def host_snapshot(lab, host: str) -> str:
    """What a migration could change on a host: domains (with state and persistence), storage pools, and
    the files in the image directory.  Sizes are left out: a running guest's own disk grows as it writes."""
    return lab.exec(host, (
        "for d in $(virsh list --all --name); do echo \"$d $(virsh domuuid $d) $(virsh domstate $d | tr ' ' _) "
        "$(virsh dominfo $d | awk '/^Persistent/ {print $2}')\"; done | sort; echo ---; "
        "virsh pool-list --all --name | sort; echo ---; "
        "ls -1 /var/lib/libvirt/images/"
    )).stdout
