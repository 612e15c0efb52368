"""FlowCatalog: HTTP, queue and timer find flows by id in the flows directory only; paths are for the CLI."""

from __future__ import annotations

import os

import pytest

from shared.services.catalog import FlowCatalog, FlowNotFound

FLOW = "id: {id}\nsteps:\n  - {{id: a, kind: declare_variable, name: x, type: integer, value: 1}}\n"


@pytest.fixture
def catalog(tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.yaml").write_text(FLOW.format(id="hello-flow"))
    (flows / "broken.yaml").write_text("id: broken\nsteps: nope\n")
    (tmp_path / "evil.yaml").write_text("db_password: hunter2\nprivate_thing: 1\n")  # outside the flows dir
    (tmp_path / "outside.yaml").write_text(FLOW.format(id="outside"))
    os.symlink(tmp_path / "outside.yaml", flows / "linked.yaml")  # a symlink out of the flows dir
    return FlowCatalog(flows, {"default"})


def test_a_flow_is_found_by_its_id(catalog):
    assert catalog.get("hello-flow").id == "hello-flow"


@pytest.mark.parametrize("reference", [
    "evil.yaml", "../evil", "../evil.yaml", "..", "outside", "linked", "hello.yaml", "flows/hello.yaml",
    "evil\x00", "a" * 10_000, "", "/etc/passwd", "nothing-here",
])
def test_anything_but_a_known_id_is_the_same_not_found(catalog, reference):
    with pytest.raises(FlowNotFound) as caught:
        catalog.get(reference)
    message = str(caught.value)
    assert "db_password" not in message and "private_thing" not in message and "hunter2" not in message
    assert message in ("unknown flow: a flow id is 1-128 letters, digits and . _ -", f"unknown flow {reference!r}")
    assert len(message) < 100


def test_unknown_id_answer_does_not_depend_on_what_is_on_disk(catalog, tmp_path):
    with pytest.raises(FlowNotFound) as outside:
        catalog.get("evil")
    (tmp_path / "evil.yaml").unlink()
    with pytest.raises(FlowNotFound) as absent:
        catalog.get("evil")
    assert str(outside.value) == str(absent.value) == "unknown flow 'evil'"


def test_the_cli_may_load_a_path_explicitly(catalog, tmp_path):
    assert catalog.load_reference(str(tmp_path / "outside.yaml")).id == "outside"
    assert catalog.load_reference("hello-flow").id == "hello-flow"
    with pytest.raises(FlowNotFound):
        catalog.load_reference("outside")
