from __future__ import annotations

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, LibvirtClient
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeGateway
from ansible_collections.kvm.migration.plugins.module_utils._volume import VolumeSpec


@pytest.fixture
def client(test_uri):
    with LibvirtClient(test_uri) as c:
        yield c


def test_volume_xml_keeps_images_thin_and_names_the_backing_file():
    xml = VolumeSpec("/img/a&b.qcow2", "qcow2", 1 << 30, "/img/base.qcow2", "qcow2").xml()
    assert "<name>a&amp;b.qcow2</name>" in xml
    assert "<capacity unit='bytes'>1073741824</capacity>" in xml
    assert "<allocation unit='bytes'>0</allocation>" in xml
    assert "<backingStore><path>/img/base.qcow2</path><format type='qcow2'/></backingStore>" in xml


def test_create_in_an_existing_pool_then_roll_back(client, tmp_path):
    stager = VolumeGateway(client)
    spec = VolumeSpec(str(tmp_path / "images" / "vm1.qcow2"), "qcow2", 64 << 20)
    assert stager.existing(spec.path) is None
    stager.create(spec)
    assert stager.existing(spec.path) is not None
    assert stager.check(spec) == []
    assert stager.check(VolumeSpec(spec.path, "raw", 32 << 20)) == [
        f"{spec.path} has format qcow2, expected raw",
        f"{spec.path} has virtual size {64 << 20}, expected {32 << 20}",
    ]
    assert stager.rollback() == [spec.path]
    assert stager.existing(spec.path) is None
    stager.close()
    # The persistent pool that held the directory is untouched.
    assert client.lookup_pool("images").isActive()


def test_directory_without_pool_gets_a_transient_pool_that_goes_away(client, tmp_path):
    stager = VolumeGateway(client)
    spec = VolumeSpec(str(tmp_path / "elsewhere" / "disk.raw"), "raw", 1 << 20)
    stager.create(spec)
    pools = {p.name(): p for p in client.list_pools()}
    transient = [n for n in pools if n.startswith("kvm-migration-")]
    assert len(transient) == 1 and not pools[transient[0]].isPersistent()
    stager.close()
    assert not [p for p in client.list_pools() if p.name().startswith("kvm-migration-")]
    assert stager.created == [spec.path]  # close() keeps what was made; only rollback() deletes


def test_remove_reports_whether_something_was_deleted(client, tmp_path):
    stager = VolumeGateway(client)
    spec = VolumeSpec(str(tmp_path / "images" / "gone.qcow2"), "qcow2", 1 << 20)
    assert stager.remove(spec.path) is False
    stager.create(spec)
    assert stager.remove(spec.path) is True
    assert stager.existing(spec.path) is None
    stager.close()


def test_an_inactive_pool_for_the_directory_is_a_clear_error(client, tmp_path):
    client.lookup_pool("images").destroy()
    stager = VolumeGateway(client)
    with pytest.raises(InvalidRequest, match="Storage pool images for .* is not active") as err:
        stager.existing(str(tmp_path / "images" / "vm1.qcow2"))
    assert "pool-start images" in err.value.hint


@pytest.mark.parametrize("name", ["sub/disk.qcow2", "../escape.qcow2", "a#b", "two words", "-x", "/elsewhere/d.qcow2"])
def test_pool_volume_names_never_leave_the_pool_and_nothing_changes(client, tmp_path, name):
    from ansible_collections.kvm.migration.plugins.module_utils._pools import PoolManager, PoolSpec

    target = tmp_path / "newpool"
    target.mkdir()
    spec = PoolSpec(name="newpool", target=str(target))
    with pytest.raises(InvalidRequest, match="volume"):
        PoolManager(client).ensure(spec, "started", volumes=[VolumeSpec(name, "qcow2", 1 << 20)])
    assert client.lookup_pool("newpool") is None


@pytest.mark.parametrize("field,value,message", [
    ("target", "/srv/../etc", "target='/srv/../etc' is not an absolute directory"),
    ("target", "/srv/a\nb", "is not an absolute directory"),
    ("name", "../x", "name='../x' is not a storage pool name"),
    ("name", " padded", "is not a storage pool name"),
])
def test_pool_names_and_targets_that_would_land_elsewhere_are_refused(client, tmp_path, field, value, message):
    """Found by the hostile-input battery: libvirt resolved target=/srv/../etc and defined a pool on /etc."""
    from ansible_collections.kvm.migration.plugins.module_utils._pools import PoolManager, PoolSpec

    before = sorted(p.name() for p in client.list_pools())
    spec = PoolSpec(**dict({"name": "newpool", "target": str(tmp_path / "newpool")}, **{field: value}))
    with pytest.raises(InvalidRequest) as err:
        PoolManager(client).ensure(spec, "started")
    assert message in err.value.msg
    assert sorted(p.name() for p in client.list_pools()) == before


@pytest.mark.parametrize("capacity", [-1, 0, 2 ** 64])
def test_volume_capacity_out_of_range_is_refused_before_the_pool_starts(client, tmp_path, capacity):
    """Found by the hostile-input battery: capacity -1 started (and built) the pool, then libvirt said "malformed
    capacity element"."""
    from ansible_collections.kvm.migration.plugins.module_utils._pools import PoolManager, PoolSpec

    spec = PoolSpec(name="newpool", target=str(tmp_path / "newpool"))
    with pytest.raises(InvalidRequest, match=r"volumes\[\]\.capacity=%d for v1 is out of range" % capacity):
        PoolManager(client).ensure(spec, "started", volumes=[VolumeSpec("v1", "qcow2", capacity)])
    assert client.lookup_pool("newpool") is None


def test_stopped_pool_with_volumes_is_refused_before_stopping(client, tmp_path):
    from ansible_collections.kvm.migration.plugins.module_utils._pools import PoolManager, PoolSpec

    pool = client.lookup_pool("images")
    spec = PoolSpec(name="images", target=pool_target(pool))
    with pytest.raises(InvalidRequest, match="state is stopped"):
        PoolManager(client).ensure(spec, "stopped", volumes=[VolumeSpec("d.qcow2", "qcow2", 1 << 20)])
    assert pool.isActive()


def test_stale_transient_pool_is_adopted_and_removed(client, tmp_path):
    directory = tmp_path / "left"
    directory.mkdir()
    client.create_transient_pool("<pool type='dir'><name>kvm-migration-dead0001</name><target><path>%s</path>"
                                 "</target></pool>" % directory)
    stager = VolumeGateway(client)
    assert stager.existing(str(directory / "x.raw")) is None
    stager.close()
    assert client.lookup_pool("kvm-migration-dead0001") is None


def test_journal_marks_a_directory_until_the_run_ends(client, tmp_path):
    stager = VolumeGateway(client)
    stager.journal_uuid = "11111111-2222-3333-4444-555555555555"
    spec = VolumeSpec(str(tmp_path / "images" / "j.qcow2"), "qcow2", 1 << 20)
    stager.create(spec)
    assert stager.has_journal(str(tmp_path / "images"), stager.journal_uuid)
    later = VolumeGateway(client)  # what a re-run sees after an interrupted run
    assert later.has_journal(str(tmp_path / "images"), "11111111-2222-3333-4444-555555555555")
    assert stager.rollback() == [spec.path]
    assert not later.has_journal(str(tmp_path / "images"), "11111111-2222-3333-4444-555555555555")
    stager.close()
    later.close()


def pool_target(pool):
    from ansible_collections.kvm.migration.plugins.module_utils._volume import pool_target_path

    return pool_target_path(pool)


def test_pool_changes_read_current_then_wanted():
    from ansible_collections.kvm.migration.plugins.module_utils._pools import PoolSpec

    wanted, current = PoolSpec(name="p", target="/new"), PoolSpec(name="p", target="/old")
    assert wanted.differences(current) == {"target": ("/old", "/new")}


def test_a_transient_pool_closed_by_another_run_is_replaced(client, tmp_path):
    """Two runs share a directory's transient pool (libvirt allows one pool per directory); when the one that
    made it closes it, the other finds or makes a pool again instead of failing with "pool not found"."""
    first, second = VolumeGateway(client), VolumeGateway(client)
    path = str(tmp_path / "scratch" / "x.raw")
    (tmp_path / "scratch").mkdir()
    assert first.existing(path) is None
    assert second.existing(path) is None  # adopts the first one's pool
    first.close()
    assert second.existing(path) is None
    assert second.available(str(tmp_path / "scratch")) > 0
    second.close()
    assert [p for p in client.list_pools() if p.name().startswith("kvm-migration-")] == []


class _PoolBeingDestroyed:
    """A transient pool caught between "inactive" and "gone" while another run destroys it: every call fails
    with "storage pool is not active" (VIR_ERR_OPERATION_INVALID).  The test driver destroys atomically, so
    that instant is simulated; the real one was seen on a lab host (controller killed, then a re-run)."""

    def __init__(self, pool):
        self._pool = pool

    def isPersistent(self):
        return False

    def isActive(self):
        return False

    def __getattr__(self, name):
        def fail(*_args):
            import libvirt
            exc = libvirt.libvirtError("Requested operation is not valid: storage pool '%s' is not active"
                                       % self._pool.name())
            exc.err = (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_STORAGE, str(exc), 2, "", "", "", 0, 0)
            raise exc
        return fail


def test_a_transient_pool_caught_while_another_run_destroys_it_is_replaced(client, tmp_path):
    first, second = VolumeGateway(client), VolumeGateway(client)
    directory = tmp_path / "scratch"
    directory.mkdir()
    path = str(directory / "x.raw")
    assert first.existing(path) is None
    assert second.existing(path) is None  # adopts the first one's pool
    adopted = second._pools_by_dir[str(directory)]
    dying = _PoolBeingDestroyed(adopted)
    second._pools_by_dir[str(directory)] = dying
    second._transient_pools = [dying]
    first.close()
    second.create(VolumeSpec(path, "raw", 512))
    assert second.existing(path) is not None
    second.rollback()
    second.close()
    assert [p for p in client.list_pools() if p.name().startswith("kvm-migration-")] == []


def test_a_persistent_pool_that_is_not_active_is_not_taken_for_a_vanished_one(client, tmp_path):
    stager = VolumeGateway(client)
    directory = tmp_path / "images"
    path = str(directory / "y.raw")
    assert stager.existing(path) is None
    client.lookup_pool("images").destroy()
    try:
        with pytest.raises(Exception, match="not active"):
            stager.create(VolumeSpec(path, "raw", 512))
    finally:
        client.lookup_pool("images").create(0)
    stager.close()


class _PoolWhoseVolumeGoesAway:
    """Hands out a volume, then deletes it through another handle: as when the interrupted run's module deletes
    the same file between this run's lookup and delete."""

    def __init__(self, pool):
        self._pool = pool

    def storageVolLookupByName(self, name):
        vol = self._pool.storageVolLookupByName(name)
        self._pool.storageVolLookupByName(name).delete(0)
        return vol

    def __getattr__(self, name):
        return getattr(self._pool, name)


def test_a_volume_deleted_by_another_run_under_our_delete_counts_as_gone(client, tmp_path):
    stager = VolumeGateway(client)
    directory = tmp_path / "images"
    path = str(directory / "z.raw")
    stager.create(VolumeSpec(path, "raw", 512))
    stager._pools_by_dir[str(directory)] = _PoolWhoseVolumeGoesAway(stager._pools_by_dir[str(directory)])
    assert stager.remove(path) is False
    stager._pools_by_dir[str(directory)] = stager._pools_by_dir[str(directory)]._pool
    assert stager.existing(path) is None
    stager.close()


def test_a_directory_tree_is_made_and_taken_back_through_volumes(client, tmp_path):
    """The TPM state tree: directories made as volumes of format dir, each counted as created, the journal only
    in the directory above the tree; rollback takes files, then directories, deepest first, then the journal.
    (libvirt's test driver keeps pools and volumes in memory: the lab's offline TPM test does it on disk.)"""
    base = str(tmp_path / "swtpm")
    state = base + "/5ab0c8a2-0000-4000-8000-000000000001"
    stager = VolumeGateway(client)
    stager.journal_uuid = "5ab0c8a2-0000-4000-8000-000000000001"
    stager.make_directory(state, mode="0711")
    stager.make_directory(state + "/tpm2", mode="0700", journal=False)
    stager.create(VolumeSpec(state + "/tpm2/tpm2-00.permall", "raw", 4096), journal=False)
    assert stager.kind(state) == "dir" and stager.kind(state + "/tpm2") == "dir"
    assert stager.kind(state + "/tpm2/tpm2-00.permall") == "file" and stager.kind(state + "/nothing") is None
    assert stager.entries(state) == ["tpm2"]
    assert stager.has_journal(base, stager.journal_uuid) and not stager.has_journal(state, stager.journal_uuid)
    assert stager.rollback() == [state + "/tpm2/tpm2-00.permall", state + "/tpm2", state]
    assert stager.kind(state) is None and not stager.has_journal(base, "5ab0c8a2-0000-4000-8000-000000000001")
    stager.close()


def test_remove_tree_removes_files_before_their_directories(client, tmp_path):
    state = str(tmp_path / "swtpm" / "u")
    maker = VolumeGateway(client)
    maker.make_directory(state)
    maker.make_directory(state + "/tpm2")
    for name in ("tpm2-00.permall", "tpm2-00.volatilestate"):
        maker.create(VolumeSpec(state + "/tpm2/" + name, "raw", 512))
    # A re-run that found an interrupted run's tree (the test driver's pools hold their volumes in memory, so
    # the first run's pools stay open; the re-run adopts them).
    later = VolumeGateway(client)
    assert later.remove_tree(state) == [state + "/tpm2/tpm2-00.permall", state + "/tpm2/tpm2-00.volatilestate",
                                        state + "/tpm2", state]
    assert later.kind(state) is None and later.remove_tree(state) == []
    later.close()
    maker.close()
