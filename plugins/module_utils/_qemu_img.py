# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""qemu-img on the host the module runs on: open, measure, convert, check and compare images.  Every failure
names the command and carries qemu-img's own message.  A conversion can report its progress (qemu-img -p) and
be bounded by a deadline: qemu-img is then killed and the caller removes what it wrote."""

from __future__ import annotations

import json
import re

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._watched_process import run_watched

# qemu-img check: 0 clean, 1 check not completed, 2 corruptions, 3 leaked clusters only, 63 format cannot check
CHECK_LEAKS_ONLY = 3
CHECK_UNSUPPORTED = 63
# qemu-img -p writes "    (12.50/100%)\r" to stdout
_PERCENT = re.compile(rb"\((\d{1,3}(?:\.\d+)?)/100%\)")


class QemuImg:
    """`run` is AnsibleModule.run_command (argv list -> (rc, stdout, stderr))."""

    def __init__(self, run, binary="qemu-img"):
        self._run = run
        self.binary = binary

    def _call(self, args):
        return self._run([self.binary] + list(args))

    def _json(self, args, what, cls=OperationFailed):
        rc, out, err = self._call(args)
        if rc != 0:
            raise cls("%s failed: %s" % (what, (err or out).strip() or "qemu-img exited with %d" % rc),
                      details={"command": " ".join([self.binary] + list(args))})
        try:
            return json.loads(out)
        except ValueError:
            raise OperationFailed("%s printed no JSON: %s" % (what, out[:200]))

    def info(self, path, fmt):
        """qemu-img's view of an image (opening it, and its backing chain, is the first corruption test)."""
        return self._json(["info", "--output=json", "-f", fmt, path], "qemu-img could not open %s" % path,
                          cls=InvalidRequest)

    def check_source(self, path, fmt):
        """A read-only consistency check of a source image; corruption is a clear refusal."""
        rc, out, err = self._call(["check", "-f", fmt, path])
        if rc in (0, CHECK_LEAKS_ONLY, CHECK_UNSUPPORTED):
            return
        raise InvalidRequest("%s is corrupt (qemu-img check exit %d): %s" % (path, rc, (err or out).strip()[-500:]),
                             hint="copy the disk from the datastore again; if VMware reports it healthy, repair it "
                                  "there with vmkfstools -x check")

    def measure(self, path, src_fmt, fmt):
        """Bytes the converted image needs on disk."""
        data = self._json(["measure", "--output=json", "-f", src_fmt, "-O", fmt, path],
                          "qemu-img measure of %s" % path)
        return int(data["required"])

    def convert(self, src, src_fmt, dst, fmt, backing=None, progress=None, deadline=None, limit="its deadline",
                target_exists=False):
        """progress(percent) is called as qemu-img reports it; past deadline (time.monotonic()) qemu-img is
        killed and OperationFailed names the point it reached and the limit (e.g. "timeout=3600").  With
        target_exists dst (a block device) is written as it is, not created."""
        args = ["convert", "-f", src_fmt, "-O", fmt]
        if target_exists:
            args += ["-n"]
        elif fmt == "qcow2":
            args += ["-o", "compat=1.1,lazy_refcounts=off"]
        if backing:
            args += ["-B", backing, "-F", "qcow2"]
        if progress is None and deadline is None:
            rc, out, err = self._call(args + [src, dst])
        else:
            rc, out, err = self._watched([self.binary] + args + ["-p", src, dst], progress, deadline,
                                         "converting %s to %s" % (src, dst), limit)
        if rc != 0:
            raise OperationFailed("converting %s to %s failed: %s" % (src, dst, (err or out).strip()[-800:]))

    @staticmethod
    def _watched(argv, progress, deadline, what, limit):
        """Run argv, passing each percent it prints to progress, killing it past the deadline."""
        reached = [0.0]

        def on_output(chunk, is_stderr):
            found = None if is_stderr else _PERCENT.findall(chunk)
            if found:
                reached[0] = min(100.0, float(found[-1]))
                if progress is not None:
                    progress(reached[0])

        def stopped():
            return OperationFailed("%s was stopped at %.0f%%: %s ran out" % (what, reached[0], limit),
                                   hint="give it more time, or copy the source to faster local storage first")

        rc, err = run_watched(argv, on_output, deadline, stopped)
        return rc, "", err

    def check(self, path, fmt):
        if fmt != "qcow2":
            return
        rc, out, err = self._call(["check", "-f", fmt, path])
        if rc not in (0, CHECK_LEAKS_ONLY):
            raise OperationFailed("the converted image %s fails qemu-img check (exit %d): %s"
                                  % (path, rc, (err or out).strip()[-500:]))

    def compare(self, src, src_fmt, dst, fmt):
        """Whether the guest sees the same bytes through both images (backing chains included)."""
        rc, out, err = self._call(["compare", "-f", src_fmt, "-F", fmt, src, dst])
        if rc == 0:
            return
        if rc == 1:
            raise OperationFailed("the converted image %s differs from %s: %s" % (dst, src, out.strip()[-300:]))
        raise OperationFailed("qemu-img compare of %s and %s failed: %s" % (src, dst, (err or out).strip()[-500:]))
