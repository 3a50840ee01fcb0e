"""Every role is laid out the same way: its first step checks the input, in tasks/validate.yml, before anything
changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[3] / "roles").iterdir() if (p / "tasks").is_dir())


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_the_first_step_of_every_role_checks_its_input(role):
    first = yaml.safe_load((role / "tasks" / "main.yml").read_text())[0]
    included = first.get("ansible.builtin.include_tasks") or first.get("ansible.builtin.import_tasks")
    target = included["file"] if isinstance(included, dict) else included
    assert target == "validate.yml", f"{role.name} starts with {first.get('name')!r}"
    assert (role / "tasks" / "validate.yml").is_file()
    assert (role / "meta" / "argument_specs.yml").is_file()
