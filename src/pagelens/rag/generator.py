"""The one interface every answer model implements, and the events it streams.

Messages are OpenAI chat-completions messages, as plain dicts, so a prompt means the same to a
remote server and to a model in this process:

    {"role": "system" | "user" | "assistant",
     "content": str | [{"type": "text", "text": str},
                       {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}]}

`Generator.stream` yields `TextDelta`s then exactly one `Finished`. A consumer that stops early
closes the iterator (`aclose`), and the generator stops its work upstream (closes the HTTP stream,
or stops decoding). Failures are raised as the typed errors of `pagelens.errors`:
`GeneratorUnavailable` (unreachable; names the URL, never the key), `GeneratorFailed` (an error
status from the server), `GeneratorTimeout` (slower than the configured limit).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

ChatMessage = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Token counts as the generator reports them (0 when it reports none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TextDelta:
    """The next piece of the answer's text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The last event of a stream: its usage and why it stopped ("stop", "length")."""

    usage: Usage
    finish_reason: str = "stop"


GenerationEvent = TextDelta | Finished


@runtime_checkable
class Generator(Protocol):
    """An answer model: `stream(messages, max_tokens=...)` -> `TextDelta`s, then one `Finished`."""

    @property
    def model(self) -> str:
        """The model's name as responses report it."""
        ...

    @property
    def accepts_images(self) -> bool:
        """False for a text-only set-up (`--llm-images off`): the prompt carries pages' text layers."""
        ...

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> AsyncIterator[GenerationEvent]: ...

    async def aclose(self) -> None:
        """Release connections or the loaded model."""
        ...
