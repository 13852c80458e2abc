"""Headless Chromium for the console's browser test, from Debian's packages.

`rtd setup` installs it when missing, as it resolves the jars: the browser test
(tests/integration/test_console_browser.py) drives /usr/bin/chromium through
/usr/bin/chromedriver with Selenium.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stack.debian_packages import apt_install

CHROMIUM = Path("/usr/bin/chromium")
PACKAGES = ("chromium", "chromium-driver")


def browser_present() -> bool:
    return CHROMIUM.exists() and shutil.which("chromedriver") is not None


def ensure_browser() -> str:
    """Install Debian's chromium and chromium-driver unless present; say what was done."""
    if browser_present():
        return f"browser {CHROMIUM}"
    apt_install(PACKAGES, "the console's browser test")
    return f"browser {CHROMIUM} (installed {', '.join(PACKAGES)})"
