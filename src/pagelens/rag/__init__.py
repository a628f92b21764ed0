"""Answers over retrieved pages: the prompt built from a collection's top pages, the generators that
answer it (an OpenAI-compatible server, or a vision-language model in this process), stage timings
and the answer cache. Sits below `service` and beside `index`; imports neither `api` nor `service`."""
