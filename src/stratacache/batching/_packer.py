"""PromptPacker: several small prompts in one LLM call, split back apart and verified."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from stratacache.batching._micro import MicroBatcher
from stratacache.errors import ConfigurationError

__all__ = ["PromptPacker", "pack_prompts", "split_answers"]

_INSTRUCTIONS = """Answer each of the {n} questions below on its own; they are unrelated.
Reply with exactly {n} blocks, in question order, each exactly in this form:
<<<ANSWER k {nonce}>>>
the answer to question k
<<<END k {nonce}>>>
Write nothing outside the blocks.
"""


def _nonce(prompts: Sequence[str]) -> str:
    """Derived from the prompts, so a packed call is cacheable like any other; unguessable
    by the prompts' authors, so a prompt cannot forge another item's answer block."""
    return hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:12]


def pack_prompts(prompts: Sequence[str]) -> tuple[str, str]:
    """The packed prompt and its nonce."""
    nonce = _nonce(prompts)
    parts = [_INSTRUCTIONS.format(n=len(prompts), nonce=nonce)]
    for k, prompt in enumerate(prompts, 1):
        parts.append(f"<<<QUESTION {k} {nonce}>>>\n{prompt}\n<<<END QUESTION {k} {nonce}>>>")
    return "\n".join(parts), nonce


def split_answers(text: str, nonce: str, n: int) -> list[str | None]:
    """One answer per prompt, or None where the reply has no single, non-empty block for it."""
    pattern = re.compile(
        rf"<<<ANSWER (\d+) {re.escape(nonce)}>>>\n?(.*?)\n?<<<END \1 {re.escape(nonce)}>>>",
        re.DOTALL,
    )
    found: dict[int, list[str]] = {}
    for match in pattern.finditer(text):
        found.setdefault(int(match.group(1)), []).append(match.group(2).strip())
    answers: list[str | None] = []
    for k in range(1, n + 1):
        blocks = found.get(k, [])
        answers.append(blocks[0] if len(blocks) == 1 and blocks[0] else None)
    return answers


class PromptPacker:
    """Opt-in: send up to ``max_items`` small prompts as one call to ``complete(prompt) -> str``.

    Pays off when calls are small and many (classification, extraction, short rewrites) and
    the request budget (RPM) or per-call latency binds, not tokens; see ``docs/batching.md``.
    Any item whose answer block is missing, duplicated or empty is asked again on its own,
    so a sloppy reply costs an extra call, never a wrong answer for a neighbour.

    ``complete`` may be sync or async. ``await submit(prompt)`` packs concurrent callers via
    a :class:`MicroBatcher`; ``await arun(prompts)`` / ``run(prompts)`` pack a known list.
    """

    def __init__(
        self,
        complete: Callable[[str], Any],
        *,
        max_items: int = 8,
        max_chars: int = 8000,
        max_wait: float = 0.01,
    ) -> None:
        if max_items < 1 or max_chars < 1:
            raise ConfigurationError("max_items and max_chars must be >= 1")
        self.complete = complete
        self.max_items = max_items
        self.max_chars = max_chars
        self.packed_calls = 0
        self.single_calls = 0
        self._batcher: MicroBatcher[str, str] = MicroBatcher(
            self._apack, max_items=max_items, max_tokens=max_chars, max_wait=max_wait,
            token_counter=len, bisect=False,
        )  # fmt: skip

    def _chunks(self, prompts: Sequence[str]) -> list[list[str]]:
        chunks: list[list[str]] = [[]]
        size = 0
        for prompt in prompts:
            if chunks[-1] and (
                len(chunks[-1]) >= self.max_items or size + len(prompt) > self.max_chars
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(prompt)
            size += len(prompt)
        return [c for c in chunks if c]

    async def _acomplete(self, prompt: str) -> str:
        if inspect.iscoroutinefunction(self.complete):
            return str(await self.complete(prompt))
        value = await asyncio.to_thread(self.complete, prompt)
        return str(await value if inspect.isawaitable(value) else value)

    async def _apack(self, prompts: list[str]) -> list[str]:
        if len(prompts) == 1:
            self.single_calls += 1
            return [await self._acomplete(prompts[0])]
        text, nonce = pack_prompts(prompts)
        self.packed_calls += 1
        answers = split_answers(await self._acomplete(text), nonce, len(prompts))
        missing = [i for i, a in enumerate(answers) if a is None]
        self.single_calls += len(missing)
        retried = await asyncio.gather(*(self._acomplete(prompts[i]) for i in missing))
        for i, answer in zip(missing, retried, strict=True):
            answers[i] = answer
        return [a or "" for a in answers]

    def _pack(self, prompts: list[str]) -> list[str]:
        def complete(prompt: str) -> str:
            value = self.complete(prompt)
            return str(asyncio.run(value) if inspect.iscoroutine(value) else value)

        if len(prompts) == 1:
            self.single_calls += 1
            return [complete(prompts[0])]
        text, nonce = pack_prompts(prompts)
        self.packed_calls += 1
        answers = split_answers(complete(text), nonce, len(prompts))
        for i, answer in enumerate(answers):
            if answer is None:
                self.single_calls += 1
                answers[i] = complete(prompts[i])
        return [a or "" for a in answers]

    async def submit(self, prompt: str) -> str:
        return await self._batcher.submit(prompt)

    async def arun(self, prompts: Sequence[str]) -> list[str]:
        chunks = await asyncio.gather(*(self._apack(c) for c in self._chunks(prompts)))
        return [answer for chunk in chunks for answer in chunk]

    def run(self, prompts: Sequence[str]) -> list[str]:
        return [answer for chunk in self._chunks(prompts) for answer in self._pack(chunk)]
