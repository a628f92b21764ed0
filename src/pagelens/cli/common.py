"""What the commands share: their options, settings from flags, JSON options and output, and the
one-line error every failure becomes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pagelens.errors import InvalidInput, PagelensError

if TYPE_CHECKING:
    from pagelens.settings import Settings

UrlOption = Annotated[
    str | None,
    typer.Option(help="A pagelens server, e.g. http://127.0.0.1:8000; without it, work embedded (on --data-dir)."),
]
KeyOption = Annotated[
    str | None, typer.Option(help="Bearer key for --url (default: PAGELENS_API_KEY or SERVICE_API_KEY).")
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Embedded: the model, hub id or directory (default PAGELENS_MODEL).")
]
DataOption = Annotated[
    str | None, typer.Option(help="Embedded: where collections live (default: PAGELENS_DATA_DIR or the user's).")
]
CollectionOption = Annotated[str, typer.Option("--collection", "-c", help="The collection.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# the answer model (`serve`, and `ask` embedded); None: PAGELENS_LLM_* variables apply
LlmUrlOption = Annotated[
    str | None,
    typer.Option(help="Answer with this OpenAI-compatible server (vLLM, Ollama, ...), e.g. http://127.0.0.1:8001/v1."),
]
LLM_MODEL_HELP = (
    "The answer model: its name on --llm-url's server, or without --llm-url a vision-language model (hub id or "
    "directory) loaded in this process."
)
LlmModelOption = Annotated[str | None, typer.Option(help=LLM_MODEL_HELP)]
LlmKeyOption = Annotated[str | None, typer.Option(help="Bearer key of --llm-url's server (PAGELENS_LLM_API_KEY).")]
LlmImagesOption = Annotated[
    str | None,
    typer.Option(help="on: pages go to the answer model as images; off: as their PDF text layers (a text-only model)."),
]


class State:
    """Options of the whole command line (`pagelens --debug ...`), set by the app's callback."""

    debug = False


def settings_from_options(**given: object) -> Settings:
    """Settings from the options given (None: not given, so PAGELENS_* variables and defaults
    apply); a bad value exits with one line per setting, no traceback."""
    from pydantic import ValidationError

    from pagelens.settings import Settings

    try:
        return Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as error:
        for problem in error.errors():
            typer.echo(f"error: setting {'.'.join(map(str, problem['loc']))}: {problem['msg']}", err=True)
        raise typer.Exit(2) from error


def json_option(text: str | None, option: str) -> Any:
    """A JSON option's value (None when not given); `InvalidInput` naming the option when not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"{option} is not valid JSON: {error}") from None


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def prefixed(error: PagelensError, where: str) -> PagelensError:
    """The same error (class, status, index cleared) with `where: ` before its message."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.message, copy.index = f"{where}: {error.message}", None
    Exception.__init__(copy, copy.message)
    return copy


def describe(error: BaseException) -> str | None:
    """The one line a failure the user can act on becomes (None: a bug, to show with its traceback):
    pagelens' typed errors, an unreachable or malformed --url, a file that cannot be read or written."""
    import httpx

    if isinstance(error, PagelensError):
        return str(error)
    if isinstance(error, httpx.TransportError):
        try:
            url = error.request.url
            server = f"{url.scheme}://{url.netloc.decode()}"
        except RuntimeError:  # no request attached
            server = "the server"
        reason = str(error) or type(error).__name__
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            return f"cannot reach {server} ({reason}); is the server running, and is --url right?"
        return f"the connection to {server} failed: {type(error).__name__}: {reason}"
    if isinstance(error, httpx.InvalidURL):
        return f"malformed URL: {error}"
    if isinstance(error, OSError):
        return str(error)
    return None
