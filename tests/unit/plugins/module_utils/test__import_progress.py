"""vmware_import's conversion progress: the real qemu-img reporting its percent and stopped at a deadline, the
progress file the module keeps (written atomically, throttled, removed with its directory), and the line the
controller prints from it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from ansible_collections.kvm.migration.plugins.module_utils import _import_progress
from ansible_collections.kvm.migration.plugins.module_utils._errors import OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._import_progress import (
    ProgressFile,
    progress_line,
    progress_path,
    remove_progress,
)
from ansible_collections.kvm.migration.plugins.module_utils._qemu_img import QemuImg

qemu_img = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(qemu_img is None, reason="qemu-img is not installed")


def _unused_run(argv):
    raise AssertionError("a watched conversion must not go through run_command: %r" % (argv,))


@pytest.fixture
def source_vmdk(tmp_path):
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        for block in range(32):
            f.write(bytes([block]) * (1024 * 1024))
    vmdk = tmp_path / "src.vmdk"
    subprocess.run([qemu_img, "convert", "-q", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)], check=True)
    return vmdk


@needs_qemu_img
def test_a_watched_conversion_reports_rising_percents_and_writes_the_same_bytes(tmp_path, source_vmdk):
    seen = []
    dst = tmp_path / "dst.qcow2"
    QemuImg(_unused_run).convert(str(source_vmdk), "vmdk", str(dst), "qcow2", progress=seen.append,
                                 deadline=time.monotonic() + 600)
    assert seen and seen == sorted(seen) and seen[-1] == 100.0, seen
    same = subprocess.run([qemu_img, "compare", "-f", "vmdk", "-F", "qcow2", str(source_vmdk), str(dst)], check=False)
    assert same.returncode == 0


@needs_qemu_img
def test_a_conversion_past_its_deadline_is_stopped_and_named(tmp_path, source_vmdk):
    with pytest.raises(OperationFailed, match=r"converting .*src.vmdk to .*dst.qcow2 was stopped at 0%: "
                                              r"timeout=30 s ran out") as caught:
        QemuImg(_unused_run).convert(str(source_vmdk), "vmdk", str(tmp_path / "dst.qcow2"), "qcow2",
                                     deadline=time.monotonic() - 1, limit="timeout=30 s")
    assert "give it more time" in caught.value.hint
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "dst.qcow2")], capture_output=True, text=True, check=False)
    assert leftovers.stdout == "", "qemu-img still runs: %s" % leftovers.stdout


@needs_qemu_img
def test_a_failed_watched_conversion_carries_qemu_imgs_message(tmp_path):
    with pytest.raises(OperationFailed, match="converting .*missing.vmdk to .* failed: .*No such file"):
        QemuImg(_unused_run).convert(str(tmp_path / "missing.vmdk"), "vmdk", str(tmp_path / "d.qcow2"), "qcow2",
                                     progress=lambda percent: None)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_progress_file_is_throttled_atomic_and_removed_with_its_directory(tmp_path, monkeypatch):
    run_dir = tmp_path / "run" / "kvm-migration"
    monkeypatch.setattr(_import_progress, "PROGRESS_DIR", str(run_dir))
    clock = Clock()
    progress = ProgressFile("/srv/ds/web01/./web01.vmx", "web01", 2, clock=clock)
    assert progress.path == progress_path("/srv/ds/web01/web01.vmx")  # the controller's spelling finds it
    progress.start_disk(1, "/srv/ds/web01/web01_1.vmdk", "/var/lib/libvirt/images/web01-disk1.qcow2", 1024 ** 3)
    clock.now += 10
    progress.update(25.0)
    state = json.loads(open(progress.path).read())
    assert state == {"name": "web01", "disks": 2, "disk": 2, "source": "web01_1.vmdk", "volume": "web01-disk1.qcow2",
                     "percent": 25.0, "size": 1024 ** 3, "rate": 1024 ** 3 / 4 / 10, "elapsed": 10.0}
    clock.now += 0.5
    progress.update(30.0)  # within a second of the last write: not written
    assert json.loads(open(progress.path).read())["percent"] == 25.0
    assert sorted(p.name for p in run_dir.iterdir()) == [progress.path.rsplit("/", 1)[-1]]  # no .tmp left
    progress.close()
    assert not run_dir.exists()


def test_a_progress_dir_that_holds_other_files_stays(tmp_path, monkeypatch):
    run_dir = tmp_path / "kvm-migration"
    run_dir.mkdir()
    (run_dir / "other").write_text("x")
    monkeypatch.setattr(_import_progress, "PROGRESS_DIR", str(run_dir))
    stale = progress_path("/srv/a.vmx")
    open(stale, "w").close()
    remove_progress(stale)
    assert [p.name for p in run_dir.iterdir()] == ["other"]


def test_an_unwritable_progress_dir_never_fails_the_import(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(_import_progress, "PROGRESS_DIR", str(blocker / "sub"))
    progress = ProgressFile("/srv/a.vmx", "a", 1)
    progress.start_disk(0, "/srv/a.vmdk", "/images/a-disk0.qcow2", 1024)
    progress.update(50.0)
    progress.close()


def test_the_controller_line_names_host_vm_disk_percent_size_and_rate():
    state = {"name": "web01", "disks": 2, "disk": 1, "source": "web01-flat.vmdk", "volume": "web01-disk0.qcow2",
             "percent": 45.04, "size": 40 * 1024 ** 3, "rate": 96.3 * 1024 ** 2, "elapsed": 212.4}
    assert progress_line("hv-a", state) == ("hv-a: importing web01, disk 1/2 (web01-flat.vmdk -> web01-disk0.qcow2) "
                                            "45% of 40960 MiB, 96.3 MiB/s, 212 s")
