"""`chat_template`: one Jinja text that gives every message of a chat, in prompt flow's format.

The rendered text is split at role lines — `# system:`, `# user:`, `# assistant:` alone on a line (the `#` is
optional, case is ignored) — and each part becomes a message (stripped; empty parts are dropped). Text before the
first role line is an error. A value rendered into the template cannot open a new message: role lines inside
values are swapped for placeholders before rendering and restored after the split (as prompt flow escapes them).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from shared.engine.ports import StepFailure
from shared.engine.templates import render_text
from shared.secret import Secret

ROLES = ("system", "user", "assistant")
ROLE_LINE = re.compile(r"(?im)^[ \t]*#?[ \t]*(system|user|assistant)[ \t]*:[ \t]*(?:\r?\n|\Z)")
ROLE_IN_VALUE = re.compile(r"(?im)^([ \t]*#?[ \t]*)(system|user|assistant)([ \t]*:)")


class RoleEscapes:
    """Placeholders for role words found inside rendered values, restored after the split."""

    def __init__(self) -> None:
        self.nonce = uuid.uuid4().hex
        self.originals: dict[str, str] = {}

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return ROLE_IN_VALUE.sub(self.swap, value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value  # numbers, None, Secret (which refuses to render anyway)

    def swap(self, match: re.Match[str]) -> str:
        placeholder = f"\ue000{self.nonce}{len(self.originals)}\ue000"
        self.originals[placeholder] = match.group(2)
        return match.group(1) + placeholder + match.group(3)

    def restore(self, text: str) -> str:
        for placeholder, original in self.originals.items():
            text = text.replace(placeholder, original)
        return text


def chat_template_messages(template: str, scope: dict[str, Any]) -> list[dict[str, Any]]:
    escapes = RoleEscapes()
    safe_scope = {name: value if isinstance(value, Secret) else escapes.value(value) for name, value in scope.items()}
    text = render_text(template, safe_scope)
    if not isinstance(text, str):
        text = str(text)
    parts = ROLE_LINE.split(text)
    if parts[0].strip():
        raise StepFailure("field chat_template: text before the first role line (# system:, # user: or "
                          "# assistant:)")
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        content = escapes.restore(content).strip()
        if content:
            messages.append({"role": role.lower(), "content": content})
    if not messages:
        raise StepFailure("field chat_template: no message: the template rendered no text after its role lines")
    return messages
