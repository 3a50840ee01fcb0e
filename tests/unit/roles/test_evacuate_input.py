"""The evacuate role's input check, run through Ansible on localhost (it reads only variables and the
inventory): every bad value is refused with a message naming the variable and the value it got."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = Path(__file__).with_name("evacuate_validate.yml")


def validate(**extra):
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "tests" / "ansible.cfg"))
    env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="0")
    extra_vars = {"evacuate_source": "localhost", "evacuate_destinations": [], "evacuate_state": "active", **extra}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(PLAYBOOK),
                           "-e", json.dumps(extra_vars)], env=env, capture_output=True, text=True, check=False)
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    checks = [t for t in data["plays"][0]["tasks"] if "Check the role's input" in t["task"]["name"]]
    return proc.returncode, checks[0]["hosts"]["localhost"] if checks else {}


def test_good_caps_pass_and_awx_strings_count_as_numbers():
    rc, got = validate(evacuate_max_outgoing="3", evacuate_max_incoming=1, evacuate_return=True)
    assert rc == 0 and not got.get("failed"), got


@pytest.mark.parametrize("variable, value", [
    ("evacuate_max_incoming", 0), ("evacuate_max_incoming", "two"), ("evacuate_max_outgoing", 17),
    ("evacuate_max_outgoing", "-1"), ("evacuate_max_incoming", "2.5"),
])
def test_a_cap_out_of_range_is_refused_naming_both_caps(variable, value):
    rc, got = validate(**{variable: value})
    assert rc != 0 and got.get("failed"), got
    assert "evacuate_max_outgoing and evacuate_max_incoming between 1 and 16 migrations" in got["msg"], got["msg"]
    assert json.dumps(value) in got["msg"], got["msg"]
