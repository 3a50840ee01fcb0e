"""Unit tests of the lab test guest's pure helpers (no QEMU, no libvirt)."""

import xml.etree.ElementTree as ET

import pytest

from kvmlab import guest
from kvmlab.guest import (
    GUEST_DIR_IN_HOST,
    RECORD_BASE_SECTOR,
    check_continuity,
    domain_xml,
    parse_records,
    parse_ticks,
)

BOOT = "1c82b6a9"
OTHER = "deadbeef"
SECTOR = 512


def tick_line(n, boot=BOOT, up=None):
    up = n + 2.5 if up is None else up
    return f"TICK {n} boot={boot} up={up:.3f}\r\n"


def console(*ns, boot=BOOT):
    return "".join(tick_line(n, boot) for n in ns)


def record(n, boot=BOOT, up_ms=None):
    text = f"REC {n} boot={boot} up={up_ms if up_ms is not None else n * 1000}\n".encode()
    return text + bytes(SECTOR - len(text))


def disk(records, *, size_sectors=RECORD_BASE_SECTOR + 512, extra=None):
    """A RAW image with {n: boot} records (and {sector: bytes} overrides in extra)."""
    raw = bytearray(size_sectors * SECTOR)
    for n, boot in records.items():
        off = (RECORD_BASE_SECTOR + n) * SECTOR
        raw[off:off + SECTOR] = record(n, boot)
    for sector, data in (extra or {}).items():
        raw[sector * SECTOR:sector * SECTOR + len(data)] = data
    return bytes(raw)


# --- parse_ticks ---------------------------------------------------------------------

def test_parse_ticks_plain_and_crlf():
    text = "TB-BOOT boot=1c82b6a9\nTB-READY boot=1c82b6a9 dirty_mb=0 dirty_rate=0\n"
    text += "TICK 1 boot=1c82b6a9 up=3.556\n" + console(2, 3)
    assert parse_ticks(text) == [(1, BOOT), (2, BOOT), (3, BOOT)]


def test_parse_ticks_line_split_across_two_logs():
    whole = console(1, 2, 3, 4)
    cut = whole.index("TICK 3") + len("TICK 3 bo")
    first_log, second_log = whole[:cut], whole[cut:]
    assert parse_ticks(first_log) == [(1, BOOT), (2, BOOT)]  # a half line is not a tick
    assert parse_ticks(first_log + second_log) == [(n, BOOT) for n in (1, 2, 3, 4)]


def test_parse_ticks_split_inside_the_crlf():
    whole = console(1, 2)
    cut = whole.index("\r\n") + 1  # log A ends with "\r", log B starts with "\n"
    assert parse_ticks(whole[:cut] + whole[cut:]) == [(1, BOOT), (2, BOOT)]


def test_parse_ticks_stray_carriage_returns_and_noise():
    text = ("\r\r[   48.85] some kernel message\r\n"
            "TICK 7 boot=1c82b6a9 up=9.5\r00\r\n"   # stray CR inside the line
            "garbage TICK 8 boot=1c82b6a9 up=10.500\n"
            "XTICK 9 boot=1c82b6a9 up=11.500\n"     # not a tick: glued to a word
            "TICK 10 boot=1c82b6a9 up=12.500")       # no newline yet: incomplete
    assert parse_ticks(text) == [(7, BOOT), (8, BOOT)]


def test_parse_ticks_ignores_truncated_and_malformed():
    text = ("TICK 1 boot=1c82b6\n"            # boot id cut short
            "TICK 2 boot=1c82b6a9\n"          # no up=
            "TICK x boot=1c82b6a9 up=1.000\n"
            "TB-DISKERR 3 Input/output error\n"
            "TICK 4 boot=1c82b6a9 up=6.500\n")
    assert parse_ticks(text) == [(4, BOOT)]


# --- parse_records -------------------------------------------------------------------

def test_parse_records_reads_valid_records():
    raw = disk({1: BOOT, 2: BOOT, 3: BOOT})
    assert parse_records(raw) == {1: BOOT, 2: BOOT, 3: BOOT}


def test_parse_records_empty_disk_and_short_image():
    assert parse_records(bytes(4 * 1024 * 1024)) == {}
    assert parse_records(b"") == {}
    # an image that ends in the middle of the record area
    raw = disk({1: BOOT, 2: BOOT}, size_sectors=RECORD_BASE_SECTOR + 3)
    assert parse_records(raw) == {1: BOOT, 2: BOOT}


def test_parse_records_skips_invalid_sectors():
    extra = {
        RECORD_BASE_SECTOR + 3: record(4),                  # record in the wrong sector
        RECORD_BASE_SECTOR + 4: record(4)[:-1] + b"x",      # trailing garbage
        RECORD_BASE_SECTOR + 5: b"REC 5 boot=XYZ up=1\n",   # bad boot id
        RECORD_BASE_SECTOR + 6: b"\xff" * SECTOR,           # random data
    }
    raw = disk({1: BOOT, 2: BOOT, 7: BOOT}, extra=extra)
    assert parse_records(raw) == {1: BOOT, 2: BOOT, 7: BOOT}


def test_parse_records_stops_after_64_empty_sectors():
    raw = disk({1: BOOT, 2: BOOT, 60: BOOT, 200: BOOT}, size_sectors=RECORD_BASE_SECTOR + 1000)
    # 3..59 is a run of 57 empty sectors: scanning goes on; 61..199 is longer: it stops
    assert parse_records(raw) == {1: BOOT, 2: BOOT, 60: BOOT}


def test_parse_records_ignores_data_before_the_base():
    raw = disk({1: BOOT}, extra={RECORD_BASE_SECTOR - 1: record(0)})
    assert parse_records(raw) == {1: BOOT}


def test_parse_records_accepts_bytearray():
    assert parse_records(bytearray(disk({1: BOOT}))) == {1: BOOT}


# --- check_continuity ----------------------------------------------------------------

def test_continuity_good_run():
    ticks = [(n, BOOT) for n in range(1, 21)]
    records = {n: BOOT for n in range(1, 23)}  # records past the last printed tick are fine
    assert check_continuity(ticks, records) == []


def test_continuity_good_run_from_parsed_data():
    ticks = parse_ticks(console(*range(1, 11)))
    records = parse_records(disk({n: BOOT for n in range(1, 12)}))
    assert check_continuity(ticks, records) == []


def test_continuity_no_ticks():
    problems = check_continuity([], {})
    assert len(problems) == 1 and "no complete TICK" in problems[0]


def test_continuity_gap():
    ticks = [(n, BOOT) for n in (1, 2, 3, 7, 8)]
    problems = check_continuity(ticks, {n: BOOT for n in range(1, 9)})
    assert problems == ["gap: tick 3 is followed by tick 7 (3 ticks missing)"]


def test_continuity_single_missing_tick():
    problems = check_continuity([(1, BOOT), (3, BOOT)], {1: BOOT, 2: BOOT, 3: BOOT})
    assert problems == ["gap: tick 1 is followed by tick 3 (1 tick missing)"]


def test_continuity_repeat_and_backwards():
    ticks = [(1, BOOT), (2, BOOT), (2, BOOT), (3, BOOT), (2, BOOT)]
    problems = check_continuity(ticks, {1: BOOT, 2: BOOT, 3: BOOT})
    assert any("tick 2 repeated" in p for p in problems)
    assert any("backwards" in p for p in problems)


def test_continuity_reboot_new_boot_id():
    ticks = [(1, BOOT), (2, BOOT), (3, BOOT), (1, OTHER), (2, OTHER)]
    # the new boot overwrote records 1 and 2
    records = {1: OTHER, 2: OTHER, 3: BOOT}
    problems = check_continuity(ticks, records)
    text = "\n".join(problems)
    assert "boot id changed from 1c82b6a9 to deadbeef" in text
    assert "2 boots" in text
    assert "printed by boot 1c82b6a9 but their disk records are from boot deadbeef: 1-2" in text


def test_continuity_restart_at_one_same_boot():
    ticks = [(1, BOOT), (2, BOOT), (1, BOOT), (2, BOOT)]
    problems = check_continuity(ticks, {1: BOOT, 2: BOOT})
    assert problems == ["tick counter restarted at 1 after tick 2: "
                        "the guest (or its workload) restarted"]


def test_continuity_missing_records():
    ticks = [(n, BOOT) for n in range(1, 11)]
    records = {n: BOOT for n in range(1, 11) if n not in (4, 5, 6, 9)}
    problems = check_continuity(ticks, records)
    assert problems == ["4 tick(s) without a disk record: 4-6, 9"]


def test_continuity_record_from_other_boot():
    ticks = [(1, BOOT), (2, BOOT)]
    problems = check_continuity(ticks, {1: BOOT, 2: OTHER})
    assert problems == ["1 tick(s) printed by boot 1c82b6a9 but their disk records "
                        "are from boot deadbeef: 2"]


def test_continuity_caps_the_problem_list():
    ticks = [(n, BOOT) for n in range(1, 400, 2)]  # every other tick missing
    problems = check_continuity(ticks, {n: BOOT for n in range(1, 400)}, max_problems=10)
    assert len(problems) == 11 and problems[-1].startswith("... and ")


# --- domain_xml ----------------------------------------------------------------------

def test_domain_xml_structure():
    xml = domain_xml("tb1", "/var/lib/libvirt/images/tb1.qcow2", dirty_mb=64, dirty_rate=20,
                     extra_cmdline="  foo=bar  ")
    root = ET.fromstring(xml)
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "tb1"
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "192"
    assert root.findtext("vcpu") == "1"
    os_type = root.find("os/type")
    assert os_type.get("arch") == "x86_64" and os_type.get("machine") == "pc"
    assert root.findtext("os/kernel") == f"{GUEST_DIR_IN_HOST}/vmlinuz"
    assert root.findtext("os/initrd") == f"{GUEST_DIR_IN_HOST}/initrd.img"
    assert root.findtext("os/cmdline") == ("console=ttyS0 loglevel=3 panic=-1 "
                                           "tb.dirty_mb=64 tb.dirty_rate=20 foo=bar")
    assert root.findtext("on_reboot") == "destroy"
    assert root.findtext("on_crash") == "destroy"
    assert root.find("features/acpi") is not None  # needed for the poweroff command

    disk_el = root.find("devices/disk")
    assert disk_el.find("driver").attrib == {"name": "qemu", "type": "qcow2", "cache": "none"}
    assert disk_el.find("source").get("file") == "/var/lib/libvirt/images/tb1.qcow2"
    assert disk_el.find("target").attrib == {"dev": "vda", "bus": "virtio"}

    serials = root.findall("devices/serial")
    assert [s.get("type") for s in serials] == ["pty", "unix"]
    assert serials[0].find("log").attrib == {
        "file": "/var/log/libvirt/qemu/tb1-console.log", "append": "on"}
    assert serials[0].find("target").get("port") == "0"
    assert serials[1].find("source").attrib == {
        "mode": "bind", "path": "/var/lib/libvirt/qemu/tb1.ctl"}
    assert serials[1].find("target").get("port") == "1"
    console_el = root.find("devices/console")
    assert console_el.get("type") == "pty"
    assert console_el.find("target").attrib == {"type": "serial", "port": "0"}
    assert root.find("devices/memballoon").get("model") == "none"

    for absent in ("cputune", "memtune", "blkiotune", "devices/graphics",
                   "devices/interface", "devices/video"):
        assert root.find(absent) is None, absent


def test_domain_xml_options():
    xml = domain_xml("tb-2", "/srv/d.raw", memory_mib=256, disk_cache="writeback",
                     disk_format="raw")
    root = ET.fromstring(xml)
    assert root.findtext("memory") == "256"
    assert root.find("devices/disk/driver").attrib == {
        "name": "qemu", "type": "raw", "cache": "writeback"}
    assert root.findtext("os/cmdline").endswith("tb.dirty_mb=0 tb.dirty_rate=0")


def test_domain_xml_escapes_disk_path():
    xml = domain_xml("tb3", "/srv/a&b'<c>.qcow2")
    assert ET.fromstring(xml).find("devices/disk/source").get("file") == "/srv/a&b'<c>.qcow2"


@pytest.mark.parametrize("kwargs", [
    {"name": "bad name"},
    {"name": "x/y"},
    {"disk_path": "relative.qcow2"},
    {"disk_cache": "bogus"},
    {"disk_format": "vmdk"},
    {"dirty_mb": -1},
    {"dirty_rate": 1.5},
    {"memory_mib": 16},
])
def test_domain_xml_rejects_bad_arguments(kwargs):
    args = {"name": "tb1", "disk_path": "/srv/tb1.qcow2", **kwargs}
    name, disk_path = args.pop("name"), args.pop("disk_path")
    with pytest.raises(ValueError):
        domain_xml(name, disk_path, **args)


def test_record_layout_constant_matches_the_c_source():
    source = (guest.SOURCE_DIR / "tbguest.c").read_text()
    assert f"#define RECORD_BASE_SECTOR {RECORD_BASE_SECTOR}ULL" in source
