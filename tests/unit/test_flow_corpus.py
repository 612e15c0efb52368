"""The flow corpus: every invalid file gives its exact first message; every valid and shipped flow validates."""

from pathlib import Path

import pytest

from shared.engine.errors import FlowError
from shared.engine.parser import parse_flow_file
from shared.engine.validator import validate_flow
from shared.services.catalog import flow_files

HERE = Path(__file__).resolve().parent.parent / "flows"
SHIPPED = Path(__file__).resolve().parent.parent.parent / "flows"
CONNECTIONS = {"default"}

EXPECTED = {
    'bad_model_name.yaml': 'bad_model_name.yaml:5: step a: field model: not a deployment name (1-64 letters, digits and . _ : - (not only dots))',
    'bad_response_format.yaml': "bad_response_format.yaml:7: step a: field response_format: must be text, json_object or {type: json_schema, name, schema, strict}, got 'xml'",
    'chat_template_with_user_prompt.yaml': 'chat_template_with_user_prompt.yaml:6: step a: field user_prompt: chat_template gives every message; remove this field or chat_template',
    'chat_without_user_prompt.yaml': 'chat_without_user_prompt.yaml:3: step a: field user_prompt: a chat_completion needs `user_prompt`, `history`, `prompt_template` or `chat_template`',
    'comment_only.yaml': 'comment_only.yaml:1: empty file: a flow needs `id` and `steps`',
    'concurrency_too_high.yaml': 'concurrency_too_high.yaml:7: step loop: field concurrency: must be at most 16, got 32',
    'concurrent_return.yaml': 'concurrent_return.yaml:13: step stop: return is not allowed inside for_each loop, whose iterations run concurrently',
    'concurrent_sets_outer_variable.yaml': "concurrent_sets_outer_variable.yaml:16: step add: field name: cannot set 'total', declared outside for_each loop, whose iterations run concurrently (concurrency 3); collect values with `output` and `result` instead",
    'connection_not_a_name.yaml': "connection_not_a_name.yaml:5: step a: field connection: 'Contoso AI' is neither a static connection (known: default) nor a tenant credential name (lowercase letters, digits, _ and -)",
    'declare_wrong_value_type.yaml': 'declare_wrong_value_type.yaml:7: step a: field value: must be integer, got a string',
    'duplicate_key.yaml': "duplicate_key.yaml:6: duplicate key 'value'",
    'duplicate_step_id.yaml': 'duplicate_step_id.yaml:5: step a: field id: duplicate step id (first used on line 3)',
    'duplicate_tool_name.yaml': "duplicate_tool_name.yaml:9: step a: field tools[1]: duplicate tool name 'lookup' (first on line 8)",
    'empty_file.yaml': 'empty_file.yaml:1: empty file: a flow needs `id` and `steps`',
    'error_variable_outside_catch.yaml': "error_variable_outside_catch.yaml:13: field outputs.e: undefined variable 'error'",
    'json_schema_missing_name.yaml': 'json_schema_missing_name.yaml:7: step a: field response_format.name: a json_schema needs a name (letters, digits, _ and -, at most 64)',
    'json_schema_not_a_schema.yaml': "json_schema_not_a_schema.yaml:13: step a: field response_format.schema: not a valid JSON Schema at $.properties.n.type: 'strin' is not valid under any of the given schemas",
    'json_schema_strict_open_object.yaml': 'json_schema_strict_open_object.yaml:11: step a: field response_format.schema: strict: the object at $ must set additionalProperties: false',
    'literal_api_key.yaml': 'literal_api_key.yaml:5: step c: field api_key: a literal API key in a flow file is not allowed; load it with load_credential and use a template',
    'loop_output_undefined.yaml': "loop_output_undefined.yaml:9: step loop: field output: undefined variable 'answr' (did you mean 'answer'?)",
    'loop_variable_outside_loop.yaml': "loop_variable_outside_loop.yaml:12: field outputs.last: undefined variable 'item'",
    'max_iterations_zero.yaml': 'max_iterations_zero.yaml:7: step loop: field max_iterations: must be at least 1, got 0',
    'missing_condition.yaml': 'missing_condition.yaml:3: step check: field condition: missing required field for kind if',
    'missing_endpoint.yaml': 'missing_endpoint.yaml:3: step c: field endpoint: missing required field for kind create_azure_ai_connection',
    'missing_items.yaml': 'missing_items.yaml:3: step loop: field items: missing required field for kind for_each',
    'missing_model.yaml': 'missing_model.yaml:3: step a: field model: missing required field for kind chat_completion',
    'missing_step_id.yaml': 'missing_step_id.yaml:3: step #1 of steps: field id: missing required field',
    'missing_steps.yaml': 'missing_steps.yaml:1: field steps: missing required key `steps`',
    'no_steps.yaml': 'no_steps.yaml:2: field steps: a flow needs at least one step',
    'not_a_mapping.yaml': 'not_a_mapping.yaml:1: a flow file must be a mapping, got a list',
    'reserved_variable_name.yaml': "reserved_variable_name.yaml:5: step a: field name: 'inputs' is a reserved name",
    'secret_in_output.yaml': 'secret_in_output.yaml:8: field outputs.leaked: cred.api_key holds a secret; a secret cannot be rendered into a prompt or output',
    'secret_in_prompt.yaml': 'secret_in_prompt.yaml:10: step a: field user_prompt: cred.api_key holds a secret; a secret cannot be rendered into a prompt or output',
    'set_undeclared_variable.yaml': "set_undeclared_variable.yaml:5: step a: field name: variable 'total' is not declared; add a declare_variable step before it",
    'steps_not_list.yaml': 'steps_not_list.yaml:2: `steps` must be a list of steps, got a string',
    'stream_not_boolean.yaml': 'stream_not_boolean.yaml:7: step a: field stream: must be true or false, got a string',
    'temperature_out_of_range.yaml': 'temperature_out_of_range.yaml:7: step a: field temperature: must be between 0 and 2, got 3',
    'template_syntax.yaml': "template_syntax.yaml:6: step a: field user_prompt: template syntax error: unexpected end of template, expected 'end of print statement'.",
    'tool_choice_unknown_tool.yaml': "tool_choice_unknown_tool.yaml:12: step a: field tool_choice: unknown tool 'get_wether' (did you mean 'get_weather'?); expected auto, none, required or one of the step's tools (get_weather)",
    'tool_choice_without_tools.yaml': 'tool_choice_without_tools.yaml:7: step a: field tool_choice: tool_choice needs `tools` in the same step',
    'tool_not_a_function.yaml': 'tool_not_a_function.yaml:11: step a: field tools[1]: must be {type: function, function: {name, description, parameters}}',
    'tool_parameters_not_object.yaml': 'tool_parameters_not_object.yaml:8: step a: field tools[0]: function.parameters must be a JSON Schema of type object',
    'undefined_dynamic_connection.yaml': "undefined_dynamic_connection.yaml:6: step a: field dynamic_connection: undefined dynamic connection 'customer_ai': no create_azure_ai_connection step before it sets connection_variable: customer_ai",
    'undefined_input.yaml': "undefined_input.yaml:8: step a: field user_prompt: undefined input inputs.tikcet (did you mean 'ticket'?)",
    'undefined_variable.yaml': "undefined_variable.yaml:6: step a: field user_prompt: undefined variable 'answer'",
    'unknown_field.yaml': "unknown_field.yaml:7: step a: field temprature: unknown field for kind chat_completion (did you mean 'temperature'?)",
    'unknown_input_type.yaml': "unknown_input_type.yaml:3: field inputs.n.type: unknown input type 'int'; expected one of string, integer, number, boolean, list, object (did you mean 'integer'?)",
    'unknown_kind.yaml': "unknown_kind.yaml:4: step a: field kind: unknown kind 'chat_complete' (did you mean 'chat_completion'?); expected one of declare_variable, set_variable, load_credential, create_azure_ai_connection, chat_completion, if, for_each, try, return",
    'unknown_static_connection.yaml': "unknown_static_connection.yaml:5: step a: field connection: unknown static connection 'defualt' (did you mean 'default'?); known: default",
    'unknown_top_level_key.yaml': "unknown_top_level_key.yaml:2: field title: unknown top-level key 'title'",
    'wrong_field_type.yaml': 'wrong_field_type.yaml:7: step a: field temperature: must be a number, got a string',
    'yaml_syntax.yaml': "yaml_syntax.yaml:6: YAML syntax error: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence started on line 5)",
}


def test_every_invalid_file_has_an_expectation():
    assert sorted(p.name for p in (HERE / "invalid").glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_flow_is_refused_with_its_message(name, monkeypatch):
    monkeypatch.chdir(HERE / "invalid")
    with pytest.raises(FlowError) as caught:
        validate_flow(parse_flow_file(name), CONNECTIONS)
    assert str(caught.value.problems[0]) == EXPECTED[name]
    assert "Traceback" not in str(caught.value)


@pytest.mark.parametrize("path", sorted((HERE / "valid").glob("*.yaml")), ids=lambda p: p.name)
def test_valid_flow_validates(path):
    flow = validate_flow(parse_flow_file(path), CONNECTIONS)
    assert flow.steps and flow.content_hash


SHIPPED_FILES = flow_files([SHIPPED])


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: str(p.relative_to(SHIPPED)))
def test_shipped_flow_validates(path):
    flow = validate_flow(parse_flow_file(path), CONNECTIONS)
    assert flow.id


def test_all_problems_are_reported_in_line_order(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(
        "id: many\nsteps:\n  - id: a\n    kind: chat_completion\n    user_prompt: '{{ nope }}'\n"
        "  - id: a\n    kind: set_variable\n    name: x\n    value: 1\n"
    )
    with pytest.raises(FlowError) as caught:
        validate_flow(parse_flow_file(path), CONNECTIONS)
    lines = [p.line for p in caught.value.problems]
    assert lines == sorted(lines) and len(lines) == 4
    assert [p.field for p in caught.value.problems] == ["model", "user_prompt", "id", "name"]


def test_shipped_flow_ids_are_unique():
    ids = [validate_flow(parse_flow_file(p), CONNECTIONS).id for p in SHIPPED_FILES]
    assert len(ids) == len(set(ids)) >= 3


def test_prompt_flow_originals_are_not_flow_files():
    originals = SHIPPED / "examples" / "promptflow" / "feedback-router"
    assert (originals / "flow.dag.yaml").is_file()
    assert SHIPPED / "examples" / "promptflow" / "feedback-router.yaml" in SHIPPED_FILES
    assert not [p for p in SHIPPED_FILES if originals in p.parents]


def test_yaml_nested_deeper_than_python_can_read_is_a_flow_error(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("id: nested\nsteps:\n  - " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(FlowError) as caught:
        parse_flow_file(path)
    assert str(caught.value) == f"{path}: YAML nested too deeply to read"
