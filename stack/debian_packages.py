"""Debian packages the local stack uses beside its own files, installed by `rtd setup`
where the machine allows it (root and apt-get): headless Chromium for the console's
browser test (stack/browser.py) and jemalloc for the Flink processes
(stack/flink_cluster.py, ``flink.allocator``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from stack.processes import StackError


def apt_install(packages: Sequence[str], purpose: str) -> None:
    """``apt-get install`` the packages, updating the package lists once if the first
    try fails (a fresh machine's may be empty or old). StackError says what to run when
    this machine cannot."""
    names = " ".join(packages)
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError(f"{purpose} needs Debian's {names}: run `apt-get install -y {names}` "
                         "as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", *packages]
    if subprocess.run(install, capture_output=True, check=False, env=env).returncode != 0:
        subprocess.run([apt, "update", "-q"], capture_output=True, check=False, env=env)
        result = subprocess.run(install, capture_output=True, text=True, check=False, env=env)
        if result.returncode != 0:
            raise StackError(f"apt-get install {names} failed:\n" + result.stderr[-2000:])
