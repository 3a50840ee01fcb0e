"""Every number and name a user gives is checked before anything changes, and the message names the option
and its value.  Pure Python: no libvirt connection is opened by any of these checks."""

from __future__ import annotations

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._plan import MigrationRequest
from ansible_collections.kvm.migration.plugins.module_utils._options import (
    DIRTYRATE_BOUNDS,
    MIGRATE_BOUNDS,
    check_bounds,
    check_data_uri,
    check_directory,
    check_domain_name,
    check_file_name,
    check_libvirt_uri,
)

DEST = "qemu+ssh://hv2/system"


def request(**changes):
    return MigrationRequest(**{"name": "vm1", "dest_uri": DEST, **changes})


@pytest.mark.parametrize("option, value", [
    ("max_downtime", 99999999999999999999),
    ("max_downtime", 0),
    ("bandwidth", 1e23),
    ("bandwidth", -1),
    ("bandwidth", float("nan")),
    ("link_speed", float("inf")),
    ("parallel_connections", 100000),
    ("completion_timeout", 0),
    ("progress_timeout", 10 ** 9),
    ("poll_interval", 0),
    ("measure_mib", 10 ** 6),
    ("downtime_step_interval", 0.01),
])
def test_migrate_numbers_out_of_range_name_option_and_value(option, value):
    with pytest.raises(InvalidRequest) as caught:
        request(**{option: value}).validate()
    assert caught.value.msg.startswith("%s=%r is out of range" % (option, value))


def test_migrate_defaults_pass_and_bounds_are_inclusive():
    request().validate()
    request(bandwidth=0, parallel_connections=255, max_downtime=2000 * 1000, progress_timeout=0).validate()


def test_a_bool_is_not_a_number():
    with pytest.raises(InvalidRequest, match=r"^bandwidth=True is out of range"):
        check_bounds({"bandwidth": True}, MIGRATE_BOUNDS)


def test_downtime_schedule_steps_are_bounded_each_and_in_count():
    with pytest.raises(InvalidRequest, match=r"^downtime_schedule\[1\]=0 is out of range"):
        request(downtime_schedule=[100, 0]).validate()
    with pytest.raises(InvalidRequest, match="at most 20"):
        request(downtime_schedule=list(range(1, 30))).validate()


@pytest.mark.parametrize("option, value", [("samples", 100000), ("period", 0), ("period", 61),
                                           ("measure_mib", 2048), ("max_downtime", -5)])
def test_dirtyrate_numbers_out_of_range(option, value):
    with pytest.raises(InvalidRequest, match=r"^%s=%r is out of range" % (option, value)):
        check_bounds({option: value}, DIRTYRATE_BOUNDS)


@pytest.mark.parametrize("name, words", [
    ("", "name is empty"),
    ("   ", "name is empty"),
    ("a/b", "not a libvirt domain name"),
    ("vm\nx", "not a libvirt domain name"),
    (" vm", "not a libvirt domain name"),
    ("x" * 256, "not a libvirt domain name"),
])
def test_domain_names(name, words):
    with pytest.raises(InvalidRequest, match=words):
        check_domain_name("name", name)


@pytest.mark.parametrize("uri, words", [
    ("", "dest_uri is empty"),
    (None, "dest_uri is empty"),
    ("http://hv2/system", "scheme 'http' is not qemu"),
    ("hv2", "scheme '' is not qemu"),
    ("qemu+ssh://hv2", "QEMU's libvirt URIs end in /system"),
    ("qemu+ssh://hv2/system\n", "contains spaces or newlines"),
])
def test_libvirt_uris(uri, words):
    with pytest.raises(InvalidRequest, match=words):
        check_libvirt_uri("dest_uri", uri)


def test_empty_dest_uri_is_named_not_mistaken_for_the_local_host():
    with pytest.raises(InvalidRequest, match="^dest_uri is empty"):
        request(dest_uri="").validate()


@pytest.mark.parametrize("uri", ["http://x", "tcp://", "tcp://10.0.0.2:70000", "tcp://10.0.0.2 x"])
def test_data_uris(uri):
    with pytest.raises(InvalidRequest, match="migrate_uri"):
        check_data_uri("migrate_uri", uri)


def test_good_data_uri_passes():
    check_data_uri("migrate_uri", "tcp://10.0.0.2:49152")
    check_data_uri("disks_uri", None)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a#b", "a b", "a\nb", "-rf"])
def test_file_names_never_leave_their_directory(name):
    with pytest.raises(InvalidRequest, match="is not a plain file name"):
        check_file_name("volume", name)


@pytest.mark.parametrize("path", ["relative/dir", "/var/lib/../../etc", "/var/lib/x\ny"])
def test_directories(path):
    with pytest.raises(InvalidRequest, match="is not an absolute directory"):
        check_directory("scratch_dir", path)
