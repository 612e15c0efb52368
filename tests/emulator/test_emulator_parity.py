"""Emulator parity with the service, through the real openai SDK over HTTP: tools, n, json_schema, request
validation, the served model's name, streaming usage."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from shared.emulator.server import running_emulator

TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order by its number",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}, "verbose": {"type": "boolean"}},
                   "required": ["order_id"], "additionalProperties": False}}}]
INVOICE = {"type": "object", "additionalProperties": False, "required": ["number", "total", "currency", "lines"],
           "properties": {"number": {"type": "string"}, "total": {"type": "number"},
                          "currency": {"type": "string", "enum": ["EUR", "USD", "NOK"]},
                          "lines": {"type": "array", "items": {"type": "object", "required": ["item"],
                                                               "properties": {"item": {"type": "string"}}}}}}


@pytest.fixture(scope="module")
def emulator():
    with running_emulator(models={"chat": "gpt-4o-mini-2024-07-18"}) as handle:
        yield handle


def azure(emulator, **kw):
    return openai.AsyncAzureOpenAI(azure_endpoint=emulator.base_url, api_key="k", api_version="2024-10-21",
                                   max_retries=0, **kw)


def v1(emulator):
    return openai.AsyncOpenAI(base_url=emulator.base_url + "/v1", api_key="k", max_retries=0)


async def test_required_tool_choice_gets_a_tool_call_with_schema_arguments(emulator):
    messages = [{"role": "user", "content": "Where is my parcel?\norder id: A-1001"}]
    response = await azure(emulator).chat.completions.create(model="chat", messages=messages, tools=TOOLS,
                                                             tool_choice="required")
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "lookup_order" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"order_id": "A-1001"}
    # the round trip: the tool's answer goes back, the model answers in text
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped on Monday"}'}]
    final = await azure(emulator).chat.completions.create(model="chat", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content.startswith('[chat] Tool result: {"status": "shipped on Monday"}')
    assert final.choices[0].message.tool_calls is None


async def test_auto_tool_choice_answers_in_text_unless_a_marker_asks(emulator):
    plain = await v1(emulator).chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "hello"}], tools=TOOLS)
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason == "stop"
    marked = await v1(emulator).chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "[[tool:lookup_order]] order 77"}], tools=TOOLS)
    assert json.loads(marked.choices[0].message.tool_calls[0].function.arguments) == {"order_id": "order 77"}
    none = await v1(emulator).chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "[[tool]] x"}], tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None


async def test_streamed_tool_call_reassembles(emulator):
    stream = await azure(emulator).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "order id: Z9"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup_order"}}, stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    parts = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert parts[0].function.name == "lookup_order" and parts[0].id
    assert json.loads("".join(p.function.arguments or "" for p in parts)) == {"order_id": "Z9"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens > 0


async def test_n_choices_and_their_usage(emulator):
    one = await azure(emulator).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    three = await azure(emulator).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                                          n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.choices[0].message.content == one.choices[0].message.content
    assert three.choices[2].message.content == one.choices[0].message.content + " (choice 3)"
    assert three.usage.completion_tokens > 3 * one.usage.completion_tokens - 1


async def test_json_schema_answer_has_required_properties_and_types(emulator):
    response = await azure(emulator).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Invoice\nNumber: INV-42\nTotal: 99.50\nPaid in USD"}],
        response_format={"type": "json_schema", "json_schema": {"name": "invoice", "schema": INVOICE,
                                                                "strict": True}})
    data = json.loads(response.choices[0].message.content)
    assert data["number"] == "INV-42" and data["total"] == 99.5 and data["currency"] == "USD"
    assert isinstance(data["lines"], list) and isinstance(data["lines"][0]["item"], str)


async def test_parse_with_a_pydantic_model(emulator):
    class Ticket(BaseModel):
        title: str
        priority: int
        urgent: bool

    completion = await azure(emulator).beta.chat.completions.parse(
        model="chat", messages=[{"role": "user", "content": "Title: Printer on fire\nPriority: 1"}],
        response_format=Ticket)
    assert completion.choices[0].message.parsed == Ticket(title="Printer on fire", priority=1, urgent=True)


@pytest.mark.parametrize("field,value,code", [
    ("temperature", 2.5, "decimal_above_max_value"),
    ("temperature", -1, "decimal_below_min_value"),
    ("max_tokens", 0, "integer_below_min_value"),
    ("max_completion_tokens", 0, "integer_below_min_value"),
    ("n", 0, "integer_below_min_value"),
])
async def test_out_of_range_parameters_are_400s(emulator, field, value, code):
    with pytest.raises(openai.BadRequestError) as caught:
        await azure(emulator).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}],
                                                      **{field: value})
    assert caught.value.code == code and caught.value.param == field
    assert f"got {value} instead" in caught.value.message


@pytest.mark.parametrize("messages,param,code", [
    ([1], "messages[0]", "invalid_type"),
    ([{"role": "user", "content": "x"}, {"content": "y"}], "messages[1].role", "missing_required_parameter"),
    ([{"role": "robot", "content": "x"}], "messages[0].role", "invalid_value"),
])
async def test_a_message_that_is_not_an_object_with_a_known_role_is_a_400(emulator, messages, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        await azure(emulator).chat.completions.create(model="chat", messages=messages)
    assert caught.value.code == code and caught.value.param == param


async def test_tool_choice_naming_no_tool_is_a_400(emulator):
    with pytest.raises(openai.BadRequestError) as caught:
        await azure(emulator).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}], tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}})
    assert caught.value.param == "tool_choice"


def test_deployment_route_without_api_version_is_a_400(emulator):
    url = emulator.base_url + "/openai/deployments/chat/chat/completions"
    body = {"messages": [{"role": "user", "content": "x"}]}
    missing = httpx.post(url, json=body, headers={"api-key": "k"})
    assert missing.status_code == 400 and "api-version" in missing.json()["error"]["message"]
    assert httpx.post(url + "?api-version=2024-10-21", json=body, headers={"api-key": "k"}).status_code == 200


async def test_model_is_the_served_model_not_the_deployment(emulator):
    messages = [{"role": "user", "content": "x"}]
    configured = await azure(emulator).chat.completions.create(model="chat", messages=messages)
    family = await azure(emulator).chat.completions.create(model="gpt-4o", messages=messages)
    unknown = await azure(emulator).chat.completions.create(model="my-deployment", messages=messages)
    assert (configured.model, family.model, unknown.model) == ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06",
                                                               "my-deployment")
    stream = await azure(emulator).chat.completions.create(model="chat", messages=messages, stream=True,
                                                           stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert {c.model for c in chunks} == {"gpt-4o-mini-2024-07-18"}
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
