"""Pipeline tier: jobs on a local Flink mini cluster inside the pytest process.

Some run in thread mode, whose embedded interpreter reads PYTHONPATH from the JVM the
first PyFlink call starts: set it before any test makes one."""

from flink_jobs.embedded_python import embedded_python_path

embedded_python_path()
