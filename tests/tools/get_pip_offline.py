"""Stand-in for the get-pip.py that ansible-test downloads from ci-files.testing.ansible.com.

That host is unreachable from the CI machines, so `make sanity` puts this file where ansible-test
caches the script.  It bootstraps pip from Python's own ensurepip, then installs what ansible-test
asked for (argv holds pip install arguments, e.g. `pip==24.2 --no-setuptools`) from PyPI."""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap()
# ensurepip points PIP_CONFIG_FILE at /dev/null for itself; the real install needs the machine's pip
# configuration (index, proxy certificates).
env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONFIG_FILE", "ENSUREPIP_OPTIONS")}
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args], env=env)
