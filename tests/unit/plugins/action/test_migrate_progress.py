"""The migrate action plugin's progress settings and polling cadence (its display runs in the lab tests:
tests/integration/test_convergence.py)."""

from __future__ import annotations

import pytest
from ansible_collections.kvm.migration.plugins.plugin_utils._async_progress import (
    config_file_settings,
    poll_delay,
    progress_settings,
)


def test_defaults_are_on_every_five_seconds():
    assert progress_settings({}, {}) == (True, 5.0)


def test_variables_win_over_the_environment_and_may_be_strings_as_awx_sends_them():
    env = {"KVM_MIGRATION_PROGRESS": "0", "KVM_MIGRATION_PROGRESS_INTERVAL": "60"}
    assert progress_settings({"kvm_migration_progress": "true", "kvm_migration_progress_interval": "2"}, env) == (True, 2.0)
    assert progress_settings({"kvm_migration_progress": "false"}, {}) == (False, 5.0)
    assert progress_settings({"kvm_migration_progress": False}, {}) == (False, 5.0)
    assert progress_settings({}, env) == (False, 60.0)


@pytest.mark.parametrize("task_vars, env, named", [
    ({"kvm_migration_progress_interval": "0"}, {}, "kvm_migration_progress_interval='0' is out of range"),
    ({"kvm_migration_progress_interval": 86400}, {}, "kvm_migration_progress_interval=86400 is out of range"),
    ({"kvm_migration_progress_interval": "soon"}, {}, "kvm_migration_progress_interval='soon' is not a number"),
    ({}, {"KVM_MIGRATION_PROGRESS_INTERVAL": "-1"}, "KVM_MIGRATION_PROGRESS_INTERVAL='-1' is out of range"),
])
def test_a_bad_interval_is_refused_naming_the_setting_and_its_value(task_vars, env, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        progress_settings(task_vars, env)


def test_ansible_cfg_sets_them_when_neither_variables_nor_the_environment_do(tmp_path):
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\nforks = 5\n\n[kvm_migration]\nprogress = yes\nprogress_interval = 30\nother = 1\n")
    config = config_file_settings(str(cfg))
    assert config == {"progress": "yes", "progress_interval": "30"}
    assert progress_settings({}, {}, config) == (True, 30.0)
    assert progress_settings({}, {"KVM_MIGRATION_PROGRESS_INTERVAL": "2"}, config) == (True, 2.0)
    assert progress_settings({"kvm_migration_progress_interval": 3}, {}, config) == (True, 3.0)
    assert progress_settings({}, {}, {"progress": "false"}) == (False, 5.0)
    with pytest.raises(ValueError, match=r"ansible.cfg \[kvm_migration\] progress_interval='0.1' is out of range"):
        progress_settings({}, {}, {"progress_interval": "0.1"})
    assert config_file_settings(str(tmp_path / "none.cfg")) == {} and config_file_settings(None) == {}
    cfg.write_text("[defaults]\nforks = 5\n")
    assert config_file_settings(str(cfg)) == {}


def test_status_is_asked_every_second_at_first_then_once_per_interval():
    assert poll_delay(0, 5) == 1.0
    assert poll_delay(12, 5) == 2.0
    assert poll_delay(600, 5) == 5.0
    assert poll_delay(600, 1) == 1.0
    # A 10-minute migration at the default interval: about 130 status calls (one per second was 600).
    elapsed, calls = 0.0, 0
    while elapsed < 600:
        elapsed += poll_delay(elapsed, 5)
        calls += 1
    assert 110 <= calls <= 150, calls
