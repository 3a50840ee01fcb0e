"""`make demo`: a live migration in the local lab, with its report and the proof that the guest kept running.

1. start two throwaway hypervisors (systemd-nspawn hosts hv-a and hv-b);
2. boot the test guest on hv-a (it ticks every second, writes each tick to its disk, dirties RAM);
3. run the collection's playbook: `ansible-playbook playbooks/migrate.yml` hv-a -> hv-b;
4. show the proof (the ticks continue on hv-b from the same boot, every disk record is there);
5. run the playbook again: nothing to do;
6. tear the lab down, unless --keep.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from kvmlab.guestops import LabGuest  # noqa: E402
from kvmlab.lab import Lab, LabError  # noqa: E402

SRC, DST = "hv-a", "hv-b"


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def playbook(lab: Lab, extra: dict) -> int:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR=os.environ.get("ANSIBLE_FORCE_COLOR", "0"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "tests" / "ansible.cfg"))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(lab.inventory_path),
           "kvm.migration.migrate"]
    for key, value in extra.items():
        cmd += ["-e", f"{key}={value}"]
    print("$ " + " ".join(["ansible-playbook", *cmd[1:]]), flush=True)
    return subprocess.run(cmd, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    lab = Lab()
    ok = False
    try:
        banner("1. Two throwaway hypervisors")
        lab.up(count=2, profile="ready")
        for h in lab.hosts:
            print(f"  {h.name}  {h.ip}  (systemd-nspawn, Debian {lab.suite}, libvirtd + firewalld + sshd)")

        banner(f"2. The test guest boots on {SRC}")
        vm = LabGuest(lab, name="demo-vm", dirty_mb=32, dirty_rate=8)
        vm.remove_everywhere()
        vm.start_and_wait(SRC, ticks=3)
        ticks = vm.ticks(SRC)
        print(f"  {vm.name}: 192 MiB, TCG, qcow2 disk; dirtying 32 MiB of RAM at 8 MiB/s; "
              f"tick {ticks[-1][0]} (boot {ticks[-1][1]})")

        banner(f"3. Live migration {SRC} -> {DST} with kvm.migration")
        extra = {"live_migration_vm": vm.name, "live_migration_source": SRC, "live_migration_destination": DST}
        if playbook(lab, extra) != 0:
            raise LabError("the migration playbook failed")

        banner("4. Proof that the guest kept running")
        last_src = max(n for n, _b in vm.ticks(SRC))
        vm.wait_ticks(DST, 2, after=last_src)
        proof = vm.proof([SRC, DST])
        info = vm.image_info(DST)
        print(f"  where it runs:   {SRC}: {vm.state(SRC)}, {DST}: {vm.state(DST)} (persistent: {vm.persistent(DST)})")
        print(f"  ticks:           {proof['ticks_per_host'][SRC]} on {SRC}, then {proof['ticks_per_host'][DST]} "
              f"on {DST}; one boot id: {', '.join(proof['boot_ids'])}")
        print(f"  disk records:    {proof['records']} on {DST}'s copy of the disk, one per tick, none missing")
        print(f"  destination disk: qcow2, {info['virtual-size'] >> 20} MiB virtual, "
              f"{info['actual-size'] >> 10} KiB allocated (thin)")
        if proof["problems"]:
            print("  PROBLEMS: " + "; ".join(proof["problems"]))
            raise LabError("the guest did not survive the migration intact")
        print("  verdict:         the guest never rebooted and lost no disk write")

        banner("5. The same request again: already in the desired state")
        if playbook(lab, extra) != 0:
            raise LabError("the idempotent re-run failed")
        ok = True
    except LabError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
    finally:
        if args.keep:
            banner("The lab keeps running (make lab-down removes it)")
            print(f"  inventory: {lab.inventory_path}")
            print(f"  a shell:   {sys.executable} -m kvmlab ssh {DST}")
        else:
            banner("6. Tearing the lab down")
            lab.down()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
