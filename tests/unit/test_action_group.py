"""meta/runtime.yml's action group and the modules whose docs claim it must agree: module_defaults for
group/kvm.migration.migration are silently ignored for a module missing from the group."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_that_documents_the_action_group_is_in_it_and_no_other():
    group = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]["migration"]
    claiming = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")
                      if "kvm.migration._attributes.actiongroup_migration" in p.read_text())
    assert sorted(group) == claiming
