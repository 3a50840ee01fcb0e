"""Preflight pieces that do not need two real hosts: the report, name resolution and port probes on
loopback.  The checks themselves run against real hosts in tests/integration/test_preflight.py."""

from __future__ import annotations

import socket

from ansible_collections.kvm.migration.plugins.module_utils._preflight import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    PreflightFailed,
    Report,
    probe_port,
    resolve,
)


def test_report_verdict_blockers_and_order():
    r = Report()
    r.add("network", FAIL, "port 49152 filtered", "open it")
    r.add("connection", PASS, "connected")
    r.add("cache", WARN, "unsafe allowed")
    r.add("cpu", FAIL, "incompatible", "use cpu_baseline")
    r.skip_rest("not needed")
    d = r.as_dict()
    assert d["verdict"] == "fail"
    assert d["blockers"] == ["network", "cpu"]
    assert d["warnings"] == ["cache"]
    assert [c["name"] for c in d["checks"]][:5] == ["connection", "host_uuid", "domain", "name", "cpu"]
    assert {c["status"] for c in d["checks"] if c["name"] in ("memory", "storage")} == {SKIP}
    err = PreflightFailed("vm1", "qemu+ssh://hv2/system", r)
    assert err.msg == ("Preflight found 2 blockers for migrating vm1 to qemu+ssh://hv2/system: "
                       "network: port 49152 filtered; cpu: incompatible")
    assert err.hint == "open it / use cpu_baseline"
    assert err.details["preflight"]["verdict"] == "fail"


def test_a_clean_report_passes():
    r = Report()
    r.add("connection", PASS, "ok")
    assert r.verdict == PASS and r.blockers == []


def test_resolve():
    assert resolve("localhost")[0] in ("127.0.0.1", "::1")
    address, error = resolve("no-such-host.invalid")
    assert address is None and error


def test_probe_port_tells_closed_from_open():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert probe_port("127.0.0.1", port) == (True, "open")
    finally:
        server.close()
    reachable, why = probe_port("127.0.0.1", port)
    assert reachable and why.startswith("closed")
