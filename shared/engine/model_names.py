"""Deployment and model names: `^[A-Za-z0-9._:-]{1,64}$`, and not only dots (`.` and `..` would be path
dot-segments in `/openai/deployments/{name}/…`). Checked for literal values by the validator, for rendered values
by the executor, and by the model port for whatever reaches it (and for the name an endpoint answers with)."""

from __future__ import annotations

import re

MODEL_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MODEL_NAME_RULE = "1-64 letters, digits and . _ : - (not only dots)"


def is_model_name(value: object) -> bool:
    return isinstance(value, str) and MODEL_NAME.fullmatch(value) is not None and value.strip(".") != ""
