"""The JVM artifacts, resolved from Maven Central by local_stack/pom.xml on first use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from rtd_core.config import PROJECT_ROOT, RtdConfig
from stack.processes import StackError

POM = PROJECT_ROOT / "local_stack" / "pom.xml"


def kafka_classpath_dir(config: RtdConfig) -> Path:
    return config.jars_path / "kafka"


def flink_version() -> str:
    from pyflink.version import __version__

    return __version__


def prometheus_plugin_dir(config: RtdConfig) -> Path:
    """Flink's Prometheus reporter, a plugin folder (FLINK_PLUGINS_DIR/metrics-prometheus)."""
    return config.jars_path / "flink-plugins" / "metrics-prometheus"


def prometheus_reporter_present(config: RtdConfig) -> bool:
    # The installed Flink's own version: a reporter of another release may not load.
    return (prometheus_plugin_dir(config)
            / f"flink-metrics-prometheus-{flink_version()}.jar").exists()


def jars_present(config: RtdConfig) -> bool:
    kafka = kafka_classpath_dir(config)
    flink = config.jars_path / "flink"
    return (any(kafka.glob("kafka_2.13-*.jar")) and any(flink.glob("*.jar"))
            and prometheus_reporter_present(config))


def ensure_jars(config: RtdConfig) -> None:
    """Download the broker and connector jars with Maven unless they are there already."""
    if jars_present(config):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (`mvn`) is not on PATH: install it (apt-get install maven)")
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "package",
         f"-Djars.dir={config.jars_path}", f"-Dflink.version={flink_version()}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not jars_present(config):
        raise StackError(
            "resolving jars from Maven Central failed; is Maven Central reachable?\n"
            + result.stdout[-2000:] + result.stderr[-2000:]
        )
