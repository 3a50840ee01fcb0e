"""The collection tarball (built by `make install`) ships what users run, not the lab or the developer tooling."""

from __future__ import annotations

import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tarball_members():
    built = sorted((ROOT / "build").glob("kvm-migration-*.tar.gz"))
    assert built, "no collection tarball in build/: run `make install` (make unit does) first"
    with tarfile.open(built[-1]) as tar:
        return [m.name for m in tar.getmembers()]


def test_the_tarball_leaves_out_the_lab_and_the_tooling():
    names = tarball_members()
    unwanted = [n for n in names if n.split("/")[0].startswith(".") or n == "Makefile"
                or n.startswith(("tests/lab", "tests/tools", "tests/integration", "tests/faults", "tests/unit/lab",
                                 "bench", "build"))
                or "__pycache__" in n]
    assert unwanted == []


def test_the_tarball_has_what_users_run():
    names = set(tarball_members())
    for needed in ("MANIFEST.json", "meta/runtime.yml", "plugins/modules/migrate.py",
                   "plugins/module_utils/_migration.py", "roles/live_migration/tasks/main.yml",
                   "playbooks/migrate.yml", "docs/user-guide.md", "tests/unit/conftest.py"):
        assert needed in names, needed
