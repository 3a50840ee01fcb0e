"""Fixtures for the lab integration tests: real hosts, a real guest, the collection run by ansible-playbook.

KVMLAB_REUSE=1 reuses a lab that is already up (faster while developing); KVMLAB_KEEP=1 leaves it
up after the session.  Otherwise the session starts a fresh lab and always tears it down."""

from __future__ import annotations

import os

import pytest
from helpers import ROOT, Ansible
from kvmlab.guestops import LabGuest, install_guest
from kvmlab.lab import Lab


@pytest.fixture(scope="session")
def lab():
    lab = Lab()
    reuse = os.environ.get("KVMLAB_REUSE") == "1" and lab.is_up() and len(lab.hosts) >= 2 \
        and all(h.profile == "ready" for h in lab.hosts)
    if not reuse:
        lab.up(count=2, profile="ready")
    install_guest(lab)
    try:
        yield lab
    finally:
        if os.environ.get("KVMLAB_KEEP") != "1":
            lab.down()


@pytest.fixture(scope="session")
def ansible(lab):
    return Ansible(lab.inventory_path)


@pytest.fixture
def guest(lab):
    """A fresh test guest (defined by the test), removed from every host afterwards."""
    g = LabGuest(lab, name="tbvm")
    g.remove_everywhere()
    yield g
    g.remove_everywhere()


@pytest.fixture(scope="session")
def migrate_playbook():
    return ROOT / "playbooks" / "migrate.yml"
