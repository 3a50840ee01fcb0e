"""Fixtures for the lab integration tests: real hosts, a real guest, the collection run by ansible-playbook.

KVMLAB_REUSE=1 reuses a lab that is already up (faster while developing); KVMLAB_KEEP=1 leaves it
up after the session.  Otherwise the session starts a fresh lab and always tears it down."""

from __future__ import annotations

import os

import pytest
from helpers import ROOT, Ansible, Runner
from kvmlab.guestops import LabGuest, install_guest
from kvmlab.lab import DEFAULT_SUITE, Lab


_STARTED_FRESH = []


def ensure_lab(profile: str, suite: str = DEFAULT_SUITE) -> Lab:
    """The lab with hosts of `profile` and `suite`, started if needed: three ready hosts (the evacuation
    tests need a third; the others use hv-a and hv-b, and a third costs 3 s of start-up), two bare ones.  The
    first call of a session starts a fresh lab unless KVMLAB_REUSE=1 and a matching one is up; later calls reuse
    it or switch."""
    lab = Lab()
    count = 3 if profile == "ready" else 2
    matches = (lab.is_up() and len(lab.hosts) >= count and lab.suite == suite
               and all(h.profile == profile for h in lab.hosts))
    may_reuse = bool(_STARTED_FRESH) or os.environ.get("KVMLAB_REUSE") == "1"
    if not (matches and may_reuse):
        lab.up(count=count, suite=suite, profile=profile)
    _STARTED_FRESH.append(True)
    if profile == "ready":
        install_guest(lab)
    return lab


@pytest.fixture(scope="session")
def lab_session():
    """Tears the lab down at the end of the session, whatever the tests left."""
    yield
    if os.environ.get("KVMLAB_KEEP") != "1":
        Lab().down()


@pytest.fixture(scope="module")
def lab(lab_session):
    """Three ready hypervisors (libvirt, QEMU, firewalld, SSH trust) and the test guest's kernel."""
    return ensure_lab("ready")


@pytest.fixture(scope="module")
def bare_lab(lab_session):
    """Two bare hosts: systemd, sshd and python3 only."""
    return ensure_lab("bare")


@pytest.fixture(scope="module")
def bookworm_lab(lab_session):
    """Two bare Debian 12 hosts (libvirt 9.0, QEMU 7.2, python3-libvirt 9.0): the oldest supported hypervisor."""
    return ensure_lab("bare", suite="bookworm")


@pytest.fixture(scope="session")
def ansible():
    return Ansible(Lab().inventory_path)


@pytest.fixture(scope="session")
def runner():
    """Playbooks run as AWX runs a job template: through ansible-runner."""
    return Runner(Lab().inventory_path)


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
