"""The changelog fragments follow the antsibull-changelog conventions for a first release: new modules, roles
and playbooks are listed by antsibull-changelog itself (from version_added and the collection's content), so no
fragment announces them, and nothing released can have a bug fixed yet."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FRAGMENTS = sorted((ROOT / "changelogs" / "fragments").glob("*.yml"))


def released():
    return yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text()).get("releases") or {}


def test_antsibull_changelog_accepts_every_fragment():
    tool = shutil.which("antsibull-changelog") or str(Path(sys.executable).with_name("antsibull-changelog"))
    done = subprocess.run([tool, "lint"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_no_fragment_announces_a_new_plugin_role_or_playbook():
    offenders = [(f.name, entry[:80]) for f in FRAGMENTS for entries in (yaml.safe_load(f.read_text()) or {}).values()
                 if isinstance(entries, list) for entry in entries
                 if re.search(r"\bnew (module|role|playbook|plugin)s?\b", entry)]
    assert not offenders, offenders


def test_nothing_unreleased_has_a_bugfix_fragment():
    if released():
        return  # after the first release, bug fixes are listed against it
    with_bugfixes = [f.name for f in FRAGMENTS if "bugfixes" in (yaml.safe_load(f.read_text()) or {})]
    assert not with_bugfixes, with_bugfixes
