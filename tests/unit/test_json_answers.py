"""JSON answers end with a newline, whichever helper built them; other bodies are left as they are."""

from __future__ import annotations

import json

from shared.functions.api_messages import ApiResponse


def test_json_answers_end_with_a_newline():
    built = ApiResponse.json(200, {"a": "ü"})
    assert built.body == '{"a": "ü"}\n'.encode() and json.loads(built.body) == {"a": "ü"}
    problem = ApiResponse(404, b'{"title": "Not found"}', {"content-type": "application/problem+json"})
    assert problem.body.endswith(b"}\n")
    assert ApiResponse(200, b"a,b", {"content-type": "text/csv"}).body == b"a,b"
    assert ApiResponse(204, b"", {"content-type": "application/json"}).body == b""
