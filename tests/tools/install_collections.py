"""Install the collections kvm.migration depends on, without Ansible Galaxy.

Galaxy may be unreachable (it is on the CI machines), so the collections come from the `ansible`
community package on PyPI: its wheel is downloaded without dependencies and only the named
collections are unpacked into the collections path."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ansible-version", required=True, help="version of the ansible package on PyPI")
    parser.add_argument("--dest", required=True, type=Path, help="collections path (holds ansible_collections/)")
    parser.add_argument("--pip", default=f"{sys.executable} -m pip")
    parser.add_argument("collections", nargs="+", help="namespace.name")
    args = parser.parse_args()

    wanted = {c: args.dest / "ansible_collections" / Path(*c.split(".")) for c in args.collections}
    marker = args.dest / f".from-ansible-{args.ansible_version}"
    if marker.exists() and all(p.is_dir() for p in wanted.values()):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*args.pip.split(), "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, f"ansible=={args.ansible_version}"], check=True)
        wheel = next(Path(tmp).glob("ansible-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for coll, target in wanted.items():
                prefix = "ansible_collections/%s/" % coll.replace(".", "/")
                members = [m for m in zf.namelist() if m.startswith(prefix)]
                if not members:
                    print(f"collection {coll} is not in ansible {args.ansible_version}", file=sys.stderr)
                    return 1
                shutil.rmtree(target, ignore_errors=True)
                for m in members:
                    zf.extract(m, args.dest)
                # ansible-galaxy lists a collection by its MANIFEST.json, which the wheel keeps.
                print(f"installed {coll} from ansible {args.ansible_version} into {args.dest}")
    marker.write_text("")
    return 0


if __name__ == "__main__":
    sys.exit(main())
