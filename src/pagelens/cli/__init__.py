"""The `pagelens` command line (typer), embedded or against a server (`--url`):

    pagelens serve | embed | search | make-tiny | families | demo
    pagelens index add
    pagelens collections list | create | info | delete
    pagelens documents list | info | patch | delete | file | page
    pagelens jobs list | info | watch | cancel
    pagelens bench engine | variants | priority | http | coldstart | wire | latency | search

app.py holds the app and the one-line errors, backends.py the two modes (a server through
pagelens.client, this process through pagelens.service), one module per command group. Importing
this package loads no torch: models load when a command needs one.
"""

from __future__ import annotations

from pagelens.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
