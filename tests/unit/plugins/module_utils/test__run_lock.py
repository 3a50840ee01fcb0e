"""One run at a time per domain: the lock a re-run waits on while the interrupted run's module finishes.  Real
flock(2) between real processes, in a temporary directory instead of /run/lock."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._errors import OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._run_lock import RunLock, lock_path


def _hold(directory, name, seconds, ready, releasing):
    with RunLock(name, directory=directory):
        ready.set()
        time.sleep(seconds)
        releasing.set()


def _start_holder(directory, name, seconds):
    ready, releasing = multiprocessing.Event(), multiprocessing.Event()
    proc = multiprocessing.Process(target=_hold, args=(directory, name, seconds, ready, releasing))
    proc.start()
    assert ready.wait(10)
    proc.releasing = releasing
    return proc


def test_a_free_lock_is_taken_at_once_and_its_file_removed(tmp_path):
    with RunLock("web01", directory=str(tmp_path)) as lock:
        assert os.path.exists(lock.path)
    assert lock.holder is None and lock.waited < 1
    assert os.listdir(tmp_path) == []


def test_a_second_run_waits_for_the_first_and_names_it(tmp_path):
    holder = _start_holder(str(tmp_path), "web01", 1.5)
    with RunLock("web01", directory=str(tmp_path), poll=0.1) as lock:
        assert holder.releasing.is_set(), "the lock was taken while the first run still held it"
    holder.join()
    assert lock.waited > 0
    assert lock.holder["pid"] == holder.pid
    assert os.listdir(tmp_path) == []


def test_other_domains_do_not_wait(tmp_path):
    holder = _start_holder(str(tmp_path), "web01", 3)
    try:
        with RunLock("web02", directory=str(tmp_path)) as lock:
            assert lock.holder is None
    finally:
        holder.terminate()
        holder.join()


def test_waiting_too_long_fails_naming_the_holder_and_changes_nothing(tmp_path):
    holder = _start_holder(str(tmp_path), "web01", 5)
    try:
        with pytest.raises(OperationFailed) as caught:
            with RunLock("web01", directory=str(tmp_path), wait=0.3, poll=0.1):
                pytest.fail("the lock was taken while another run held it")
        assert "Another run of kvm.migration.migrate for web01 is still going" in caught.value.msg
        assert "process %d" % holder.pid in caught.value.msg
        assert "migration_job state=aborted" in caught.value.hint
    finally:
        holder.terminate()
        holder.join()


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path):
    holder = _start_holder(str(tmp_path), "web01", 30)
    holder.kill()  # SIGKILL: no release, the file stays; the kernel drops the flock
    holder.join()
    assert os.path.exists(lock_path("web01", str(tmp_path)))
    with RunLock("web01", directory=str(tmp_path), wait=2) as lock:
        pass
    assert lock.waited < 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "x#y", "new\nline", "with space"])
def test_no_name_escapes_the_lock_directory(tmp_path, name):
    path = lock_path(name, str(tmp_path))
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path).startswith("migrate-") and path.endswith(".lock")


def test_a_lock_directory_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(OperationFailed, match="Cannot create the lock .* for the migration of web01"):
        with RunLock("web01", directory=str(blocker / "locks")):
            pytest.fail("locked inside a file")
