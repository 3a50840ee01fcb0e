"""The pattern's setup.yml loads wherever it is run from: it renders every survey (the lookup of
template_surveys/ once failed when setup.yml was passed with -e @), and every job template points at a playbook
of the collection that exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
PATTERN = ROOT / "extensions" / "patterns" / "kvm_migration"


def rendered(tmp_path, *extra):
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(PATTERN / "setup.yml"),
                           "-e", "kvm_migration_pattern_render_only=true", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    tasks = data["plays"][0]["tasks"]
    shown = next(t for t in tasks if t["task"]["name"] == "Show what would be configured")
    return shown["hosts"]["localhost"]["kvm_migration_pattern_config"], proc.stdout


def test_setup_renders_every_survey_from_anywhere_and_points_at_real_playbooks(tmp_path):
    config, _out = rendered(tmp_path)
    templates = config["controller_templates"]
    surveys = {p.stem: yaml.safe_load(p.read_text()) for p in (PATTERN / "template_surveys").glob("*.yml")}
    used = set()
    for template in templates:
        assert (ROOT / template["playbook"]).is_file(), template["playbook"]
        if template.get("survey_enabled"):
            spec = template["survey_spec"]
            assert spec["spec"] and all("variable" in q for q in spec["spec"]), template["name"]
            used |= {name for name, survey in surveys.items() if survey == spec}
    assert used == set(surveys), f"surveys no template uses: {set(surveys) - used}"
    assert {"playbooks/evacuate.yml", "playbooks/migrate.yml"} <= {t["playbook"] for t in templates}


def test_pattern_definition_follows_the_specification_and_matches_setup(tmp_path):
    pattern = json.loads((PATTERN / "meta" / "pattern.json").read_text())
    for key in ("schema_version", "name", "title", "description", "short_description", "aap_resources"):
        assert pattern.get(key), key
    assert pattern["name"] == PATTERN.name and len(pattern["title"]) <= 64
    assert all(ch.islower() or ch.isdigit() or ch == "_" for ch in pattern["name"])
    assert not pattern["short_description"].endswith(".")
    resources = pattern["aap_resources"]
    assert resources["controller_project"]["name"] and resources["controller_project"]["description"]
    ee_name = resources["controller_execution_environment"]["name"]
    jobs = resources["controller_job_templates"]
    assert sum(1 for job in jobs if job.get("primary")) == 1
    for job in jobs:
        assert job["name"] and job["description"] and len(job["name"]) <= 200
        assert job["execution_environment"] == ee_name
        assert set(job["labels"]) <= set(resources["controller_labels"])
        # The pattern's playbook exists and imports a playbook the collection ships.
        playbook = yaml.safe_load((PATTERN / "playbooks" / job["playbook"]).read_text())
        imported = playbook[0]["ansible.builtin.import_playbook"]
        assert imported.startswith("kvm.migration.")
        assert (ROOT / "playbooks" / (imported.split(".", 2)[2] + ".yml")).is_file(), imported
    # One list of job templates: the ones setup.yml configures are the ones the definition names.
    config, _out = rendered(tmp_path)
    assert [job["name"] for job in jobs] == [t["name"] for t in config["controller_templates"]]
    assert [job["playbook"] for job in jobs] == [t["playbook"].rsplit("/", 1)[-1]
                                                 for t in config["controller_templates"]]


def test_setup_creates_everything_its_job_templates_refer_to_and_never_prints_the_key(tmp_path):
    key = tmp_path / "id_hypervisors"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-material\n-----END OPENSSH PRIVATE KEY-----\n")
    config, out = rendered(tmp_path, "-e", '{"kvm_migration_hypervisors": ["hv1.example.com", "hv2.example.com"]}',
                           "-e", "kvm_migration_ssh_key_file=%s" % key, "-e", "kvm_migration_organization=Infra")
    assert [o["name"] for o in config["organizations"]] == ["Infra"]
    (project,) = config["controller_projects"]
    assert project["scm_type"] == "git" and project["scm_url"].endswith(".git") and project["organization"] == "Infra"
    (inventory,) = config["controller_inventories"]
    assert config["controller_hosts"] == [{"name": "hv1.example.com", "inventory": inventory["name"]},
                                          {"name": "hv2.example.com", "inventory": inventory["name"]}]
    (credential,) = config["controller_credentials"]
    assert credential["credential_type"] == "Machine" and credential["inputs"]["username"] == "root"
    assert credential["inputs"]["ssh_key_data"] == "(read from %s)" % key
    assert "secret-key-material" not in out
    labels = {label["name"] for label in config["controller_labels"]}
    pattern = json.loads((PATTERN / "meta" / "pattern.json").read_text())
    assert labels == set(pattern["aap_resources"]["controller_labels"])
    ee_names = {ee["name"] for ee in config["controller_execution_environments"]}
    for template in config["controller_templates"]:
        assert template["organization"] == "Infra", template["name"]
        assert template["project"] == project["name"] and template["inventory"] == inventory["name"]
        assert template["credentials"] == [credential["name"]], template["name"]
        assert template["execution_environment"] in ee_names
        assert set(template["labels"]) <= labels, template["name"]


def test_setup_without_settings_adds_no_hosts_and_no_key(tmp_path):
    config, _out = rendered(tmp_path)
    assert config["controller_hosts"] == []
    assert "ssh_key_data" not in config["controller_credentials"][0]["inputs"]
    assert [o["name"] for o in config["organizations"]] == ["KVM migration"]
