"""The `pagelens` app: its command groups, the global `--debug` option, and one place where every
failure a user can act on becomes one line `error: ...` and exit code 2."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pagelens.cli import ask, bench, collections, documents, heatmaps, index, jobs, models
from pagelens.cli.common import State, describe


class _Commands(TyperGroup):
    """The root command group: its `invoke` runs every command, so errors are turned into one line here."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, Ctrl-C, usage errors: typer's own
            raise
        except BrokenPipeError:  # the reader of the output went away (`| head`): stop quietly
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            raise typer.Exit(1) from None
        except Exception as error:
            message = describe(error)
            if message is None:
                raise  # a bug: its traceback
            if State.debug:
                traceback.print_exception(error)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Commands,
    help="Embed document pages with ColPali-family models, store them in collections and search them: in this "
    "process (embedded, on --data-dir) or through a pagelens server (--url).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="On an error, show its traceback, not just one line.")] = False,
) -> None:
    State.debug = debug


app.command()(models.serve)
app.command()(models.embed)
app.command()(index.search)
app.command()(ask.ask)
app.command()(heatmaps.heatmap)
app.add_typer(index.index_app, name="index")
app.add_typer(collections.collections_app, name="collections")
app.add_typer(documents.documents_app, name="documents")
app.add_typer(jobs.jobs_app, name="jobs")
app.command("make-tiny")(models.make_tiny)
app.command()(models.families)
app.command()(models.demo)
app.add_typer(bench.bench_app, name="bench")
