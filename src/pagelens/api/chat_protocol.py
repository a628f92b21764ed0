"""Request and response bodies of `/v1/chat/completions` and `/v1/models` (OpenAI's shapes; pydantic only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatTextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatImageURL(BaseModel):
    url: str = Field(description="A data:image/...;base64, URI (the server fetches no URLs)")
    detail: str | None = None


class ChatImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ChatImageURL


ChatContentPart = Annotated[ChatTextPart | ChatImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    """One OpenAI chat message: text, or a list of text and image parts (`developer` is `system`)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ChatContentPart]


class ChatStreamOptions(BaseModel):
    include_usage: bool = False


MAX_CHAT_TOKENS = 32_768


class ChatCompletionRequest(BaseModel):
    """`/v1/chat/completions` (OpenAI's shape). Decoding follows the model's generation config; sampling
    fields (temperature, top_p, seed, ...) are accepted and ignored. `model` may be omitted; another
    model's name is a 404 (vLLM's policy). `max_completion_tokens` wins over `max_tokens`; default 512."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_CHAT_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_CHAT_TOKENS)
    stream: bool = False
    stream_options: ChatStreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="One choice per request")


# ---------------------------------------------------------------- responses


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatAnswer(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatAnswer
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    """`/v1/chat/completions` without `stream`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of `/v1/chat/completions` with `stream: true` (the last is `data: [DONE]`): the
    role, then content deltas, then the finish reason; with `stream_options.include_usage` a last chunk
    with no choices carries `usage`. A failure mid-stream is `data: {"error": {"type", "message"}}`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: ChatUsage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """`/v1/models`: the answer model served by `/v1/chat/completions` (none when none is configured)."""

    object: Literal["list"]
    data: list[ModelCard]
