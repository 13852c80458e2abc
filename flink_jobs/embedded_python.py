"""What PyFlink's thread mode needs from the process that starts a local mini cluster.

Thread mode runs the Python operators in the JVM, through PEMJA's embedded interpreter.
That interpreter starts from the base Python, not from a virtualenv: it does not read
``pyvenv.cfg``, so the virtualenv's site-packages (and this project) are not on its
``sys.path`` unless ``PYTHONPATH`` names them. It reads ``PYTHONPATH`` from the JVM's
environment, which a local PyFlink gateway inherits from this process when it starts:
call ``embedded_python_path()`` before the first PyFlink object is made. (On the local
stack's cluster, ``stack.flink_cluster`` sets it for the TaskManager.)
"""

from __future__ import annotations

import os
import site

from rtd_core.config import PROJECT_ROOT


def embedded_python_path() -> None:
    paths = [str(PROJECT_ROOT), *site.getsitepackages()]
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *current]))
