"""The virt-v2v path of vmware_import: its progress, its timeout and what it leaves.

Mocked, and why: virt-v2v needs libguestfs and its appliance, which neither this machine nor the lab hosts run,
so a stand-in script prints what virt-v2v prints (both progress styles), writes NAME-sda into the pool as virt-v2v
does, and either ends, fails or hangs with a child process.  A domain virt-v2v would define is defined in
libvirt's test driver by the test.  Real: the process watch and the group kill, the files, the marker, the
metadata record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from types import SimpleNamespace

import pytest
from ansible_collections.kvm.migration.plugins.module_utils import _vmware_v2v
from ansible_collections.kvm.migration.plugins.module_utils._errors import OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import LibvirtClient
from ansible_collections.kvm.migration.plugins.module_utils._vmware_import import (
    Pool,
    pending_cleanup,
    read_import_record,
)

FAKE_V2V = textwrap.dedent("""\
    #!{python}
    import os, subprocess, sys, time
    mode, pool, name = os.environ["FAKE_V2V_MODE"], os.environ["FAKE_V2V_POOL"], sys.argv[sys.argv.index("-on") + 1]
    print("[   0.0] Setting up the source: -i vmx " + sys.argv[3], flush=True)
    if mode == "fail":
        sys.stderr.write("virt-v2v: error: inspection could not detect the source guest\\n")
        sys.exit(1)
    with open(os.path.join(pool, name + "-sda"), "wb") as f:
        f.write(b"x" * 4096)
    print("[  12.5] Copying disk 1/1 to " + os.path.join(pool, name + "-sda") + " (qcow2)", flush=True)
    if mode == "hang":
        print("\\u2588 45% [****************--------------------]", flush=True)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", os.environ["FAKE_V2V_TOKEN"]])
        time.sleep(300)
    sys.stdout.write("    (25.00/100%)\\r    (100.00/100%)\\n")
    print("[  20.1] Creating output metadata", flush=True)
    """)


class RecordedProgress:
    events = []

    def __init__(self, vmx, name, disks):
        self.events.append(("open", name, disks))

    def start_disk(self, index, source, volume, size):
        self.events.append(("disk", index, os.path.basename(volume), size))

    def update(self, percent):
        self.events.append(("percent", percent))

    def close(self):
        self.events.append(("close",))


@pytest.fixture
def v2v_host(tmp_path, test_uri, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    fake = tmp_path / "virt-v2v"
    fake.write_text(FAKE_V2V.format(python=sys.executable))
    fake.chmod(0o755)
    token = "fake-v2v-" + uuid.uuid4().hex
    monkeypatch.setenv("FAKE_V2V_POOL", str(images))
    monkeypatch.setenv("FAKE_V2V_TOKEN", token)
    RecordedProgress.events = []
    monkeypatch.setattr(_vmware_v2v, "ProgressFile", RecordedProgress)
    vmdk = tmp_path / "w.vmdk"
    vmdk.write_bytes(b"KDMV" + b"\0" * 508)
    vmx = tmp_path / "w.vmx"
    vmx.write_text('config.version = "8"\n')
    client = LibvirtClient(test_uri)
    client.open()
    module = SimpleNamespace(params={"vmx": str(vmx), "format": "qcow2", "timeout": 0},
                             module=SimpleNamespace(get_bin_path=lambda name: str(fake)))
    disk = {"source": str(vmdk), "files": [str(vmdk)], "virtual_size": 64 * 1024 * 1024}
    plan = {"name": "w", "nics": [], "disks": [disk]}
    try:
        yield SimpleNamespace(client=client, pool=Pool(client, "images"), module=module, plan=plan,
                              images=images, token=token)
    finally:
        subprocess.run(["pkill", "-f", token], check=False)
        client.close()


def _define(client, images):
    client.define_domain(f"""<domain type='test'><name>w</name><memory unit='MiB'>128</memory>
      <os><type arch='x86_64'>hvm</type></os>
      <devices><disk type='file' device='disk'><source file='{images}/w-sda'/><target dev='sda' bus='sata'/></disk>
      </devices></domain>""")


def test_virt_v2v_progress_feeds_the_line_and_the_import_is_recorded(v2v_host, monkeypatch):
    monkeypatch.setenv("FAKE_V2V_MODE", "ok")
    _define(v2v_host.client, v2v_host.images)  # what virt-v2v -o libvirt does at its end

    dom = _vmware_v2v.run_virt_v2v(v2v_host.module, v2v_host.client, v2v_host.pool, v2v_host.plan)

    assert RecordedProgress.events == [("open", "w", 1), ("disk", 0, "w-sda", 64 * 1024 * 1024),
                                       ("percent", 100.0), ("close",)]
    record = read_import_record(dom)
    assert record["volumes"] == [str(v2v_host.images / "w-sda")]
    assert [f["path"] for f in record["files"]] == [v2v_host.module.params["vmx"], v2v_host.plan["disks"][0]["source"]]
    assert sorted(os.listdir(v2v_host.images)) == ["w-sda"]  # no marker left


def test_virt_v2v_past_its_timeout_is_stopped_with_its_children_and_leaves_nothing(v2v_host, monkeypatch):
    monkeypatch.setenv("FAKE_V2V_MODE", "hang")
    v2v_host.module.params["timeout"] = 2

    with pytest.raises(OperationFailed, match=r"virt-v2v was stopped at disk 1/1, 45%: timeout=2 s ran out") as failure:
        _vmware_v2v.run_virt_v2v(v2v_host.module, v2v_host.client, v2v_host.pool, v2v_host.plan)

    assert "What virt-v2v made was removed" in str(failure.value)
    assert os.listdir(v2v_host.images) == []
    left = subprocess.run(["pgrep", "-f", v2v_host.token], capture_output=True, text=True, check=False).stdout
    assert left == ""  # the child virt-v2v started was killed with it
    assert ("percent", 45.0) in RecordedProgress.events and RecordedProgress.events[-1] == ("close",)


def test_a_virt_v2v_failure_carries_its_message_and_removes_the_marker(v2v_host, monkeypatch):
    monkeypatch.setenv("FAKE_V2V_MODE", "fail")
    with pytest.raises(OperationFailed, match=r"virt-v2v failed \(exit 1\): virt-v2v: error: inspection could not"):
        _vmware_v2v.run_virt_v2v(v2v_host.module, v2v_host.client, v2v_host.pool, v2v_host.plan)
    assert os.listdir(v2v_host.images) == []
    assert v2v_host.client.lookup_domain("w") is None


def test_a_killed_virt_v2v_runs_files_are_found_from_its_marker(v2v_host):
    sda = v2v_host.images / "w-sda"
    sda.write_bytes(b"half")
    other = v2v_host.images / "other-sda"
    other.write_bytes(b"not ours")
    marker = v2v_host.pool.marker_path("w")
    with open(marker, "w") as f:
        json.dump({"name": "w", "files": [str(sda), str(other), str(v2v_host.images / "w-sdb")], "pid": 2 ** 22 + 1,
                   "boot_id": "another-boot"}, f)

    assert pending_cleanup(v2v_host.pool, "w", domain_has_record=False) == (marker, [str(sda)])


def test_a_file_virt_v2v_would_write_that_is_there_already_is_refused_before_it_runs(v2v_host, monkeypatch):
    monkeypatch.setenv("FAKE_V2V_MODE", "ok")
    (v2v_host.images / "w-sda").write_bytes(b"someone's disk")
    with pytest.raises(Exception, match=r"pool images already has .*w-sda, which virt-v2v would write"):
        _vmware_v2v.run_virt_v2v(v2v_host.module, v2v_host.client, v2v_host.pool, v2v_host.plan)
    assert (v2v_host.images / "w-sda").read_bytes() == b"someone's disk"
    assert RecordedProgress.events == []
