"""The in-process answer model: a transformers vision-language chat model behind the `Generator` interface.

    vlm = TransformersVLM.load("Qwen/Qwen2.5-VL-3B-Instruct")   # a hub id or a directory
    async for event in vlm.stream(messages, max_tokens=256):   # TextDelta..., then one Finished
        ...
    await vlm.aclose()

Any checkpoint `AutoModelForImageTextToText` and `AutoProcessor` load, with a chat template (the
Qwen2-VL / Qwen2.5-VL / SmolVLM / Idefics3 / Gemma 3 families), on the embedder's device, dtype and
attention rules (pagelens.models.hardware). Decoding follows the checkpoint's generation config.

Threads: one decode thread owns the model and runs one generation at a time, in arrival order (its
queue is the lock: a second request waits for the first and never interleaves with it). Turning
messages into tensors (image decoding, the processor) runs in a worker thread before the request
queues, so a bad input fails at once. The event loop only awaits: tokens cross into it through
`call_soon_threadsafe`. Closing the stream early (or cancelling its task) sets the request's stop
flag, which a `StoppingCriteria` reads after every token, so decoding stops within one token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from pagelens.codecs.images import DEFAULT_MAX_DECODED_PIXELS, decode_image
from pagelens.codecs.payloads import decode_base64_image
from pagelens.errors import GeneratorFailed, InvalidInput, ModelLoadError, ModelNotReady, PagelensError
from pagelens.models import hardware
from pagelens.models.checkpoints import fetch_to_directory
from pagelens.rag.generator import ChatMessage, Finished, GenerationEvent, TextDelta, Usage

log = logging.getLogger(__name__)

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class GenerationRecord:
    """What one generation did: `finish_reason` is "stop" (end of turn), "length" (max_tokens) or
    "cancelled" (its consumer closed the stream, or went away before its turn)."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass
class _Request:
    """One queued generation and the way back to its consumer's event loop."""

    inputs: dict[str, torch.Tensor]
    prompt_tokens: int
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    stop: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: GenerationEvent | BaseException) -> None:
        """Hand `item` to the consumer; a closed loop means nobody listens any more: stop."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:
            self.stop.set()


class _StopFlag(StoppingCriteria):
    """Ends decoding once `should_stop()` is true (asked after every generated token)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


class _DeltaStreamer(BaseStreamer):
    """Turns generated token ids into `TextDelta`s as they come, one per token that adds text.

    The pending tokens are decoded together (byte-level BPE pieces can split a UTF-8 character, so a
    text ending in U+FFFD waits for the next token); after a newline they are dropped, bounding the
    re-decoding. The first `put` is the prompt and is skipped."""

    def __init__(self, tokenizer: Any, lock: threading.Lock, request: _Request) -> None:
        self.tokenizer = tokenizer
        self.lock = lock
        self.request = request
        self.prompt_seen = False
        self.pending: list[int] = []
        self.sent_chars = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.pending.extend(value.reshape(-1).tolist())
        text = self._decode()
        if text.endswith("\ufffd"):
            return
        self._send(text)
        if text.endswith("\n"):
            self.pending, self.sent_chars = [], 0

    def end(self) -> None:
        if self.pending:
            self._send(self._decode())
        self.pending, self.sent_chars = [], 0

    def _decode(self) -> str:
        with self.lock:
            return self.tokenizer.decode(self.pending, skip_special_tokens=True)

    def _send(self, text: str) -> None:
        if len(text) > self.sent_chars:
            self.request.emit(TextDelta(text[self.sent_chars :]))
            self.sent_chars = len(text)


def _image_from_part(part: dict[str, Any], where: str) -> Image.Image:
    """The PIL image of an `image_url` part (a base64 data URI); `InvalidInput` naming `where` if not."""
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise InvalidInput(f"{where}.image_url.url: missing; give a data:image/...;base64, URI")
    if not url[:5].lower() == "data:":
        raise InvalidInput(
            f"{where}.image_url.url: only data URIs are accepted (data:image/jpeg;base64,...); "
            f"the model server does not fetch {url[:40]!r}"
        )
    try:
        return decode_image(decode_base64_image(url, index=0), max_decoded_pixels=DEFAULT_MAX_DECODED_PIXELS)
    except InvalidInput as error:
        raise InvalidInput(f"{where}.image_url.url: {error.message}") from None


def to_processor_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> the processor's chat-template messages, images decoded to PIL:
    text parts stay `{"type": "text", "text"}`, image parts become `{"type": "image", "image": PIL}`.
    Every problem is an `InvalidInput` naming the message part (`messages[i].content[j]...`)."""
    if not messages:
        raise InvalidInput("messages: at least one message is required")
    converted = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"messages[{i}]: expected an object with role and content")
        role = ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise InvalidInput(f"messages[{i}].role: {message.get('role')!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, str):
            converted.append({"role": role, "content": [{"type": "text", "text": content}]})
            continue
        if not isinstance(content, list):
            raise InvalidInput(f"messages[{i}].content: expected a string or a list of parts")
        parts = []
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                parts.append({"type": "image", "image": _image_from_part(part, where)})
            else:
                raise InvalidInput(f"{where}: expected {{'type': 'text', 'text'}} or {{'type': 'image_url', ...}}")
        converted.append({"role": role, "content": parts})
    return converted


def _context_length(config: Any) -> int | None:
    """The decoder's position limit, if the config names one."""
    for holder in (getattr(config, "text_config", None), config):
        value = getattr(holder, "max_position_embeddings", None)
        if isinstance(value, int):
            return value
    return None


class TransformersVLM:
    """A loaded chat VLM serving `stream` (see the module docstring). Build with `load`."""

    def __init__(self, model: torch.nn.Module, processor: Any, *, name: str, attention: str) -> None:
        self._model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.name = name
        self.attention = attention
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.context_length = _context_length(model.config)
        eos = model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._pad_id = model.generation_config.pad_token_id
        if self._pad_id is None:
            self._pad_id = (
                self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._eos_ids)
            )
        self.last_generation: GenerationRecord | None = None
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._submit = threading.Lock()  # orders queueing against `close`: nothing queues after its sentinel
        # The Rust tokenizer is shared by `_prepare` (worker threads) and the streamer (decode thread):
        # one user at a time, as concurrent use can fail with "Already borrowed".
        self._tokenizer_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._decode_loop, name="pagelens-vlm", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        attn: str = "auto",
        threads: int | None = None,
        token: str | None = None,
    ) -> TransformersVLM:
        """Load `model` (hub id or directory) for generation. `device`: auto|cpu|cuda[:n]|mps;
        `dtype`: auto|float32|bfloat16|float16; `attn`: auto|flash_attention_2|cpu_blocked|sdpa|eager (auto tries
        them best first); `threads`: torch's CPU threads (None: torch's choice); `token`: hub token.
        `ModelLoadError` when it is no image-text-to-text checkpoint or has no chat template."""
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        started = time.perf_counter()
        hardware.configure_cpu_threads(threads)
        directory = fetch_to_directory(model, token=token)
        torch_device = hardware.resolve_device(device)
        torch_dtype = hardware.resolve_dtype(dtype, torch_device)
        try:
            config = AutoConfig.from_pretrained(directory)
            model_class = AutoModelForImageTextToText._model_mapping[type(config)]
        except (KeyError, ValueError, OSError) as error:
            raise ModelLoadError(
                f"{model} is not a vision-language chat model transformers can load "
                f"(AutoModelForImageTextToText): {error}"
            ) from None
        network, attention = hardware.load_with_best_attention(
            lambda attention: AutoModelForImageTextToText.from_pretrained(
                directory, dtype=torch_dtype, attn_implementation=attention,
                device_map=None if torch_device.type == "cpu" else str(torch_device),
            ),
            attn, torch_device, torch_dtype, model_class, model,
        )  # fmt: skip
        processor = AutoProcessor.from_pretrained(directory)
        if not getattr(processor, "chat_template", None):
            raise ModelLoadError(f"{model} has no chat template: it is no chat (instruct) model")
        vlm = cls(network.eval(), processor, name=model, attention=attention)
        log.info(
            "loaded answer model %s on %s as %s with %s attention in %.1f s", model, vlm.device,
            str(vlm.dtype).removeprefix("torch."), attention, time.perf_counter() - started,
        )  # fmt: skip
        return vlm

    # ---------------------------------------------------------------- the Generator interface
    @property
    def model(self) -> str:
        return self.name

    @property
    def accepts_images(self) -> bool:
        return getattr(self.processor, "image_processor", None) is not None

    async def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> AsyncIterator[GenerationEvent]:
        """`TextDelta`s of the answer to `messages`, then one `Finished`. `InvalidInput` for a bad
        message or image part, or a prompt that leaves no room for `max_tokens` in the context."""
        if self._closed:
            raise ModelNotReady(f"the answer model {self.name} is closed")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidInput(f"max_tokens: must be a positive integer, got {max_tokens!r}")
        inputs, prompt_tokens = await asyncio.to_thread(self._prepare, messages, max_tokens)
        request = _Request(inputs, prompt_tokens, max_tokens, asyncio.get_running_loop(), asyncio.Queue())
        with self._submit:
            if self._closed:
                raise ModelNotReady(f"the answer model {self.name} is closed")
            self._queue.put(request)
        try:
            while True:
                item = await request.events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            request.stop.set()  # closed early or cancelled: the decode thread stops after this token

    async def aclose(self) -> None:
        """Stop the running generation (its consumer and the queued ones get `ModelNotReady`), end the
        decode thread and release the model."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """`aclose` for synchronous owners (idempotent)."""
        with self._submit:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)  # after every queued request, which the decode thread fails
        self._thread.join(timeout=60)
        self._model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- work (worker threads)
    def _prepare(self, messages: Sequence[ChatMessage], max_tokens: int) -> tuple[dict[str, torch.Tensor], int]:
        """Messages -> the model's input tensors (on its device and dtype) and the prompt's token count."""
        conversation = to_processor_messages(messages)
        try:
            with self._tokenizer_lock:
                features = self.processor.apply_chat_template(
                    conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
                )
        except (ValueError, TypeError) as error:
            raise InvalidInput(f"messages: the model's chat template or processor refused them: {error}") from None
        prompt_tokens = int(features["input_ids"].shape[1])
        if self.context_length is not None and prompt_tokens + max_tokens > self.context_length:
            raise InvalidInput(
                f"max_tokens: the prompt is {prompt_tokens} tokens, and {prompt_tokens} + max_tokens {max_tokens} "
                f"is over the model's context of {self.context_length} tokens"
            )
        inputs = {}
        for key, value in dict(features).items():
            if isinstance(value, torch.Tensor):
                inputs[key] = value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
        return inputs, prompt_tokens

    def _decode_loop(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            if self._closed:
                request.emit(ModelNotReady(f"the answer model {self.name} closed before this request's turn"))
                continue
            if request.stop.is_set():  # its consumer went away while it waited
                self.last_generation = GenerationRecord(request.prompt_tokens, 0, "cancelled")
                continue
            try:
                record = self._generate(request)
                self.last_generation = record
                if self._closed:
                    request.emit(ModelNotReady(f"the answer model {self.name} closed during this generation"))
                else:
                    usage = Usage(record.prompt_tokens, record.completion_tokens)
                    request.emit(Finished(usage, record.finish_reason))
            except PagelensError as error:
                request.emit(error)
            except Exception as error:  # a CUDA OOM, a model bug: the request fails, the thread lives
                log.exception("the answer model failed")
                request.emit(GeneratorFailed(f"the in-process answer model {self.name} failed: {error}"))

    def _generate(self, request: _Request) -> GenerationRecord:
        streamer = _DeltaStreamer(self.tokenizer, self._tokenizer_lock, request)
        with torch.inference_mode():
            output = self._model.generate(
                **request.inputs,
                max_new_tokens=request.max_tokens,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_StopFlag(lambda: request.stop.is_set() or self._closed)]),
                pad_token_id=self._pad_id,
            )
        generated = output[0, request.prompt_tokens :].tolist()
        if request.stop.is_set() or self._closed:
            reason = "cancelled"
        elif generated and generated[-1] in self._eos_ids:
            reason = "stop"
        else:
            reason = "length" if len(generated) >= request.max_tokens else "stop"
        return GenerationRecord(request.prompt_tokens, len(generated), reason)
