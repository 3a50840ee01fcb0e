from __future__ import annotations

import os

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._nfs import (
    client_kind,
    find_line,
    render_line,
    validate_export,
    validate_options,
)


@pytest.mark.parametrize("host, kind", [
    ("*", "any"), ("@hypervisors", "netgroup"), ("10.0.0.5", "address"), ("10.0.0.0/24", "network"),
    ("10.0.0.5/32", "address"), ("fd00::1", "address"), ("*.example.com", "wildcard"), ("hv1.example.com", "host"),
    ("hv-a", "host"),
])
def test_client_kinds(host, kind):
    assert client_kind(host) == kind


@pytest.mark.parametrize("host", ["hv 1", "-bad", "a..b", "x(y)"])
def test_invalid_clients(host):
    with pytest.raises(InvalidRequest):
        client_kind(host)


def test_options_are_checked_against_exports5():
    assert validate_options("h", ["rw", "sync", "rw", "anonuid=64055", "sec=sys"]) == ["rw", "sync", "anonuid=64055", "sec=sys"]
    for bad, message in ((["rw", "ro"], "rw and ro contradict"), (["bogus"], "unknown export option 'bogus'"),
                         (["rw=1"], "option rw takes no value"), (["anonuid"], "option anonuid needs a value"),
                         (["fsid=1,2"], "may not contain"), (["sync", "async"], "sync and async contradict")):
        with pytest.raises(InvalidRequest, match=message):
            validate_options("h", bad)


def test_every_host_needs_consent():
    with pytest.raises(InvalidRequest, match=r"to every host \('\*'\) needs allow_any_client"):
        validate_export("/export", [{"host": "*", "options": ["ro"]}])
    assert validate_export("/export", [{"host": "*", "options": ["ro"]}], allow_any_client=True)


@pytest.mark.parametrize("host", ["10.0.0.0/24", "*.example.com", "@hypervisors"])
def test_no_root_squash_only_for_single_hosts(host):
    with pytest.raises(InvalidRequest, match="allow it only for single hypervisors"):
        validate_export("/export", [{"host": host, "options": ["rw", "no_root_squash"]}])


def test_export_shape_checks():
    for path, clients, message in (("relative", [{"host": "h"}], "must be absolute"),
                                   ("/with space", [{"host": "h"}], "must be absolute"),
                                   ("/export/a#b", [{"host": "h"}], "'#'"),
                                   ("/export/../etc", [{"host": "h"}], "without '..'"),
                                   ("/export/x\ny", [{"host": "h"}], "newlines"),
                                   ("/export", [], "has no clients"),
                                   ("/export", [{"host": "h"}, {"host": "h"}], "more than once: h")):
        with pytest.raises(InvalidRequest, match=message):
            validate_export(path, clients)


def test_render_and_find():
    clients = validate_export("/export/vm", [{"host": "hv1", "options": ["rw", "no_root_squash"]}, {"host": "hv2"}])
    line = render_line("/export/vm", clients)
    assert line == "/export/vm hv1(rw,no_root_squash) hv2"
    text = "# comment /export/vm\n/srv/other h(ro)\n" + line + "\n"
    assert find_line(text, "/export/vm") == 2
    assert find_line(text, "/export") is None
    assert find_line('"/export/vm" h(rw)\n', "/export/vm") == 0


def test_a_shared_exports_file_changes_only_its_line():
    from ansible_collections.kvm.migration.plugins.module_utils._nfs import desired_content

    current = "# site exports\n/srv/a h1(rw)\n/srv/vm old(ro)\n"
    assert desired_content(current, "/srv/vm", "/srv/vm h2(rw)", True, shared_file=True) == \
        "# site exports\n/srv/a h1(rw)\n/srv/vm h2(rw)\n"
    assert desired_content(current, "/srv/vm", "", False, shared_file=True) == "# site exports\n/srv/a h1(rw)\n"
    assert desired_content("", "/srv/vm", "/srv/vm h2(rw)", True, shared_file=False).endswith("/srv/vm h2(rw)\n")
    assert desired_content("x", "/srv/vm", "", False, shared_file=False) is None


def test_a_failed_exportfs_puts_the_file_back(tmp_path):
    from ansible_collections.kvm.migration.plugins.module_utils._errors import OperationFailed
    from ansible_collections.kvm.migration.plugins.module_utils._nfs import apply_exports

    target = tmp_path / "exports.d" / "vm.exports"
    target.parent.mkdir()
    target.write_text("before\n")
    with pytest.raises(OperationFailed, match=r"exportfs -ra failed \(rc=1\).*restored: nfsd not running"):
        apply_exports(str(target), "after\n", "before\n", os.replace, lambda: (1, "", "nfsd not running"))
    assert target.read_text() == "before\n"
    fresh = tmp_path / "exports.d" / "new.exports"
    with pytest.raises(OperationFailed):
        apply_exports(str(fresh), "after\n", None, os.replace, lambda: (1, "", "no"))
    assert not fresh.exists()
    assert apply_exports(str(fresh), "after\n", None, os.replace, lambda: (0, "ok", "")) == "ok"
    assert fresh.read_text() == "after\n"


def test_the_nfs_code_does_not_load_the_libvirt_layer():
    import subprocess
    import sys

    code = ("import sys; import ansible_collections.kvm.migration.plugins.module_utils._nfs; "
            "print(sorted(m for m in sys.modules if m.endswith(('._libvirt', '._module')) or m == 'libvirt'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))).stdout
    assert out.strip() == "[]"
