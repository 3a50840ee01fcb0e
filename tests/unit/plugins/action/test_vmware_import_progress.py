"""The vmware_import action plugin turns the module's progress file into a line.  The remote slurp is faked here
(it needs a controller connection); the file's content is what _import_progress writes (its own tests), and the
lab tests run the plugin for real through ansible-playbook."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

from ansible_collections.kvm.migration.plugins.action.vmware_import import ActionModule
from ansible_collections.kvm.migration.plugins.module_utils._import_progress import progress_path

STATE = {"name": "web01", "disks": 1, "disk": 1, "source": "web01.vmdk", "volume": "web01-disk0.qcow2",
         "percent": 50.0, "size": 1024 ** 3, "rate": 0.0, "elapsed": 3.0}


def plugin(args, answer):
    action = ActionModule.__new__(ActionModule)
    action._task = SimpleNamespace(args=args)
    calls = []

    def execute(module_name, module_args, task_vars):
        calls.append((module_name, module_args))
        return answer
    action._execute_module = execute
    return action, calls


def test_the_line_comes_from_the_progress_file_of_that_vmx():
    content = base64.b64encode(json.dumps(STATE).encode()).decode()
    action, calls = plugin({"vmx": "/srv/ds/web01/web01.vmx"}, {"content": content})
    line = action.progress_text("hv-a", {})
    assert line == "hv-a: importing web01, disk 1/1 (web01.vmdk -> web01-disk0.qcow2) 50% of 1024 MiB, 3 s"
    assert calls == [("ansible.legacy.slurp", {"src": progress_path("/srv/ds/web01/web01.vmx")})]


def test_no_file_or_a_torn_one_gives_no_line_and_absent_asks_nothing():
    action, _calls = plugin({"vmx": "/srv/a.vmx"}, {"failed": True, "msg": "file not found"})
    assert action.progress_text("hv-a", {}) is None
    action, _calls = plugin({"vmx": "/srv/a.vmx"}, {"content": base64.b64encode(b"{half").decode()})
    assert action.progress_text("hv-a", {}) is None
    action, calls = plugin({"vmx": "/srv/a.vmx", "state": "absent"}, {})
    assert action.progress_text("hv-a", {}) is None and calls == []
