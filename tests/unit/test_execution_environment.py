"""The pattern's execution environment: `ansible-builder create` accepts the definition, and the build context it
makes holds this checkout's collection (not a Galaxy download) and the Python and system packages the modules need.
Building the image itself needs podman or docker and a registry, which this machine does not have."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EE = ROOT / "extensions/patterns/kvm_migration/exec_env/execution-environment.yml"


def builder():
    found = shutil.which("ansible-builder") or str(Path(sys.executable).with_name("ansible-builder"))
    assert Path(found).exists(), "ansible-builder is not installed: it is in tests/requirements.txt"
    return found


def test_the_ee_takes_the_collection_this_checkout_builds(tmp_path):
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    definition = yaml.safe_load(EE.read_text())
    tarball = "kvm-migration-%s.tar.gz" % version
    assert [f["src"].rsplit("/", 1)[-1] for f in definition["additional_build_files"]] == [tarball]
    assert {"name": "collections/" + tarball, "type": "file"} in definition["dependencies"]["galaxy"]["collections"]
    assert "fedora" not in definition["images"]["base_image"]["name"]

    context = tmp_path / "context"
    done = subprocess.run([builder(), "create", "-f", str(EE), "--context", str(context)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    build = context / "_build"
    assert (build / "collections" / tarball).stat().st_size == (ROOT / "build" / tarball).stat().st_size
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    assert {"name": "collections/" + tarball, "type": "file"} in galaxy["collections"]
    python = (build / "requirements.txt").read_text().split()
    assert "libvirt-python" in python and "lxml" in python
    bindep = (build / "bindep.txt").read_text()
    assert "libvirt-devel [compile]" in bindep and "libvirt-libs" in bindep
    containerfile = (context / "Dockerfile").read_text() if (context / "Dockerfile").exists() \
        else (context / "Containerfile").read_text()
    # The galaxy stage installs from /build, where the tarball was copied.
    assert "COPY _build /build" in containerfile and "--set-enabled crb" in containerfile
