"""Token usage, normalised in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def field_of(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> TokenUsage:
        """Accepts an openai `CompletionUsage` (or its dict form); missing details count as 0."""
        if usage is None:
            return cls()
        prompt = int(field_of(usage, "prompt_tokens") or 0)
        completion = int(field_of(usage, "completion_tokens") or 0)
        total = int(field_of(usage, "total_tokens") or (prompt + completion))
        cached = int(field_of(field_of(usage, "prompt_tokens_details"), "cached_tokens") or 0)
        reasoning = int(field_of(field_of(usage, "completion_tokens_details"), "reasoning_tokens") or 0)
        return cls(prompt, completion, total, cached, reasoning)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def as_dict(self) -> dict[str, int]:  # by hand: dataclasses.asdict deep-copies, on every step of every run
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "cached_tokens": self.cached_tokens,
                "reasoning_tokens": self.reasoning_tokens}
