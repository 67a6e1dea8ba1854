"""The process ``clm serve`` becomes: ``bentoml serve`` with a metrics folder of its own.

BentoML keeps the Prometheus multiprocess files of every server under one folder of its home
(``~/bentoml/prometheus_multiproc_dir``) and empties that folder whenever a server starts.
A second service started on the same machine (another port, a test, a blue/green switch)
therefore wiped the first one's metric files: its ``/metrics`` then showed the newcomer's
figures and its own observations went to unlinked files. Each ``clm serve`` gets a folder
keyed by its port instead (one server per port at a time, so emptying it at start is right).

Run as ``python -m serving.launch METRICS_DIR ARGS...`` where ARGS are ``bentoml``'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main", "metrics_dir"]


def metrics_dir(host: str, port: int) -> Path:
    """The Prometheus multiprocess folder of the server on ``host:port``."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    home = Path(BentoMLContainer.bentoml_home.get())
    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    return home / "clm-metrics" / f"{safe_host}-{port}"


def main(argv: list[str]) -> None:
    """Point BentoML's metrics folder at ``argv[0]`` and run its CLI on the rest."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    BentoMLContainer.prometheus_multiproc_dir.set(str(folder))
    cli(argv[1:], prog_name="bentoml")


if __name__ == "__main__":
    main(sys.argv[1:])
