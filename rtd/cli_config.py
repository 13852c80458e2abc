"""The `--config` option every `rtd` command takes, and loading it with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rtd_core.config import RtdConfig, load_config

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="JSON config file (default: local stack)")
]
_err = Console(stderr=True)


def config_or_exit(path: Path | None) -> RtdConfig:
    """The config, or exit 2 saying what is wrong with it."""
    try:
        return load_config(path)
    except (FileNotFoundError, ValueError) as exc:
        _err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from exc
