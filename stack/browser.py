"""Headless Chromium for the console's browser test, from Debian's packages.

`rtd setup` installs it when missing, as it resolves the jars: the browser test
(tests/integration/test_console_browser.py) drives /usr/bin/chromium through
/usr/bin/chromedriver with Selenium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from stack.processes import StackError

CHROMIUM = Path("/usr/bin/chromium")
PACKAGES = ("chromium", "chromium-driver")


def browser_present() -> bool:
    return CHROMIUM.exists() and shutil.which("chromedriver") is not None


def ensure_browser() -> str:
    """Install Debian's chromium and chromium-driver unless present; say what was done."""
    if browser_present():
        return f"browser {CHROMIUM}"
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError("the console's browser test needs Debian's chromium and "
                         "chromium-driver: run `apt-get install -y chromium chromium-driver` "
                         "as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", *PACKAGES]
    if subprocess.run(install, capture_output=True, check=False, env=env).returncode != 0:
        # A fresh machine's package lists may be empty or old: update once, then retry.
        subprocess.run([apt, "update", "-q"], capture_output=True, check=False, env=env)
        result = subprocess.run(install, capture_output=True, text=True, check=False, env=env)
        if result.returncode != 0:
            raise StackError("apt-get install chromium chromium-driver failed:\n"
                             + result.stderr[-2000:])
    return f"browser {CHROMIUM} (installed {', '.join(PACKAGES)})"
