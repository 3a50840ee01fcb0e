"""One meaning per option, everywhere it is written down: the migrate module's documentation (its argument
spec matches it: ansible-test validate-modules checks that), the engine's request defaults, and, for every
option the live_migration role forwards, the role's argument spec and defaults.  A default changed in one
place only fails here."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.kvm.migration.plugins.module_utils._plan import MigrationRequest

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "live_migration"
# Forwarded with a transformation the role documents: the source images go in cleanup.yml after verify.yml;
# post-copy is off for an offline move; auto_converge is omitted unless set; tls follows the transport.
TRANSFORMED = {"source_cleanup", "postcopy", "auto_converge", "migrate_uri", "disks_uri", "tls"}


@functools.lru_cache(maxsize=None)
def documented_options(module):
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", "module", "--json",
                          "kvm.migration." + module], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["kvm.migration." + module]["doc"]["options"]


@pytest.fixture(scope="module")
def module_options():
    return documented_options("migrate")


# What the prediction (dirtyrate) and the migration (migrate) both take: one name, one type, the same choices.
SHARED_WITH_DIRTYRATE = ("link_speed", "postcopy", "auto_converge", "max_downtime", "measure_mib", "dest_uri")


@pytest.mark.parametrize("option", SHARED_WITH_DIRTYRATE)
def test_dirtyrate_and_migrate_name_the_same_concepts_alike(module_options, option):
    dirtyrate = documented_options("dirtyrate")
    assert option in dirtyrate, f"dirtyrate has no {option} option"
    ours, theirs = dirtyrate[option], module_options[option]
    assert ours.get("type", "str") == theirs.get("type", "str"), (option, ours.get("type"), theirs.get("type"))
    assert ours.get("choices") == theirs.get("choices"), (option, ours.get("choices"), theirs.get("choices"))
    if theirs.get("default") is not None:
        assert ours.get("default") == theirs["default"], (option, ours.get("default"), theirs["default"])


def forwarded():
    """{module option: role variable} from the role's migrate task."""
    task = yaml.safe_load((ROLE / "tasks" / "migrate.yml").read_text())[0]["kvm.migration.migrate"]
    found = {}
    for option, value in task.items():
        match = re.search(r"\{\{\s*(live_migration_\w+)", str(value))
        if match:
            found[option] = match.group(1)
    return found


def test_the_request_defaults_are_the_documented_ones(module_options):
    defaults = {f.name: f.default for f in dataclasses.fields(MigrationRequest)
                if f.default is not dataclasses.MISSING}
    for option, doc in module_options.items():
        if option in defaults and "default" in doc:
            assert defaults[option] == doc["default"], (option, defaults[option], doc["default"])


@pytest.mark.parametrize("option,variable", sorted(forwarded().items()))
def test_the_role_forwards_each_option_with_the_same_type_default_and_choices(module_options, option, variable):
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    role_defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    doc = module_options[option]
    assert variable in spec, f"{variable} (forwarded to {option}) is not in the role's argument_specs"
    role = spec[variable]
    assert role.get("type", "str") == doc.get("type", "str"), (variable, role.get("type"), doc.get("type"))
    assert role.get("choices") == doc.get("choices"), (variable, role.get("choices"), doc.get("choices"))
    if option in TRANSFORMED or "default" not in doc or doc["default"] is None:
        return
    assert role.get("default") == doc["default"], (variable, role.get("default"), doc["default"])
    assert role_defaults.get(variable) == doc["default"], (variable, role_defaults.get(variable), doc["default"])


# What the evacuation plan and the migration both take: the same meaning, type, choices and default.
SHARED_WITH_EVACUATION = ("link_speed", "postcopy", "auto_converge", "max_downtime", "measure_mib", "memory_margin",
                          "storage", "tls", "allow_unsafe")


@pytest.mark.parametrize("option", SHARED_WITH_EVACUATION)
def test_evacuation_plan_and_migrate_name_the_same_concepts_alike(module_options, option):
    plan = documented_options("evacuation_plan")
    assert option in plan, f"evacuation_plan has no {option} option"
    ours, theirs = plan[option], module_options[option]
    assert ours.get("type", "str") == theirs.get("type", "str"), (option, ours.get("type"), theirs.get("type"))
    assert ours.get("choices") == theirs.get("choices"), (option, ours.get("choices"), theirs.get("choices"))
    if theirs.get("default") is not None:  # migrate's auto_converge has none: unset means "as the strategy says"
        assert ours.get("default") == theirs["default"], (option, ours.get("default"), theirs["default"])


def evacuation_forwarded():
    """{evacuation_plan option: evacuate role variable} from the role's plan task."""
    tasks = yaml.safe_load((ROOT / "roles" / "evacuate" / "tasks" / "plan.yml").read_text())
    task = next(t for t in tasks if "kvm.migration.evacuation_plan" in t)["kvm.migration.evacuation_plan"]
    return {option: re.search(r"\{\{\s*(evacuate_\w+)", str(value)).group(1)
            for option, value in task.items() if re.search(r"\{\{\s*(evacuate_\w+)", str(value))}


@pytest.mark.parametrize("option,variable", sorted(evacuation_forwarded().items()))
def test_the_evacuate_role_forwards_each_plan_option_alike(option, variable):
    doc = documented_options("evacuation_plan")[option]
    role_dir = ROOT / "roles" / "evacuate"
    spec = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    role_defaults = yaml.safe_load((role_dir / "defaults" / "main.yml").read_text())
    assert variable in spec, f"{variable} (forwarded to {option}) is not in the role's argument_specs"
    role = spec[variable]
    assert role.get("type", "str") == doc.get("type", "str"), (variable, role.get("type"), doc.get("type"))
    assert role.get("choices") == doc.get("choices"), (variable, role.get("choices"), doc.get("choices"))
    assert role.get("default") == doc.get("default"), (variable, role.get("default"), doc.get("default"))
    assert role_defaults.get(variable) == doc.get("default"), (variable, role_defaults.get(variable), doc.get("default"))
