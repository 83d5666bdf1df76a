"""examples/: the Airflow DAG and the Dagster assets stay true to cartfhir.

Neither Airflow nor Dagster is installed here, so the examples are compiled, not
run: every ``api.X`` (and ``ExitCode.X``) they use must exist, and every cartfhir
command line they hold must parse with the real CLI (commands and options).
"""

from __future__ import annotations

import ast
import dataclasses
import shlex
import typing
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cartfhir import api
from cartfhir.cli import cli
from cartfhir.errors import ExitCode

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
MODULES = {"api": api, "ExitCode": ExitCode}


def _tree(path: Path) -> ast.Module:
    source = path.read_text(encoding="utf-8")
    compile(source, str(path), "exec")  # a syntax error fails here
    return ast.parse(source)


def _command_lines(tree: ast.Module) -> list[list[str]]:
    """The arguments after ``cartfhir`` in each shell command of the example (a
    ``bash_command=`` string: Airflow's BashOperator)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "bash_command":
            assert isinstance(node.value, ast.Constant), "a bash_command the test can read"
            for part in node.value.value.split("&&"):
                words = shlex.split(part.split(">>")[0])
                if words and words[0].rsplit("/", 1)[-1] == "cartfhir":  # the program run
                    lines.append(words[1:])
    return lines


def _parse(args: list[str]) -> None:
    """Parse ``args`` as cartfhir's CLI would, without running the command."""
    with cli.make_context("cartfhir", list(args), resilient_parsing=False) as ctx:
        # click 8 keeps the command name apart (protected args); click 9 will not
        name, command, rest = cli.resolve_command(
            ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])
        assert command is not None, name
        command.make_context(name, rest, parent=ctx)


def test_there_are_examples_for_airflow_and_dagster() -> None:
    assert {p.name for p in EXAMPLES} >= {"airflow_dag.py", "dagster_assets.py"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_example_uses_only_what_cartfhir_has(path: Path) -> None:
    tree = _tree(path)
    used = [(node.value.id, node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in MODULES]
    assert any(module == "api" for module, _ in used)
    missing = [f"{module}.{attr}" for module, attr in used
               if not hasattr(MODULES[module], attr)]
    assert missing == []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cartfhir"):
            module = __import__(node.module, fromlist=["_"])
            assert all(hasattr(module, a.name) for a in node.names), node.module


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_examples_command_lines_are_real_commands(path: Path) -> None:
    lines = _command_lines(_tree(path))
    assert lines or path.name != "airflow_dag.py"  # the DAG shows the CLI too
    for args in lines:
        _parse(args)


def test_the_command_line_check_refuses_a_wrong_option() -> None:
    with pytest.raises(click.UsageError):
        _parse(["run", "--config", "c.yaml", "--no-such-option"])
    with pytest.raises(click.UsageError):
        _parse(["--log-format", "json", "no-such-command"])


def _api_call(node: ast.AST) -> str | None:
    """'extract' for ``api.extract(...)``, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "api":
        return node.func.attr
    return None


def _own_nodes(function: ast.FunctionDef) -> Iterator[ast.AST]:
    """The nodes of ``function``'s body, not those of functions defined inside it."""
    stack = [node for node in function.body
             if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node)
                     if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))


def _result_attributes(tree: ast.Module) -> list[tuple[str, str]]:
    """(api function, attribute) for each attribute an example reads off a result:
    ``api.f(...).attr``, or ``x.attr`` where ``x = api.f(...)`` in the same function."""
    used = []
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        own = list(_own_nodes(function))
        results = {}
        for node in own:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) and _api_call(node.value):
                results[node.targets[0].id] = _api_call(node.value)
        for node in own:
            if not isinstance(node, ast.Attribute):
                continue
            called = _api_call(node.value)
            if called is None and isinstance(node.value, ast.Name):
                called = results.get(node.value.id)
            if called is not None:
                used.append((called, node.attr))
    return used


def _missing_attributes(used: list[tuple[str, str]]) -> list[str]:
    missing = []
    for function, attr in used:
        # api re-exports the stages' result types lazily (start-up): resolve hints through
        # its public names, which load on first use.
        public = {name: getattr(api, name) for name in api.__all__}
        result = typing.get_type_hints(getattr(api, function), localns=public)["return"]
        names = set(dir(result))
        if dataclasses.is_dataclass(result):
            names |= {f.name for f in dataclasses.fields(result)}
        if attr not in names:
            missing.append(f"api.{function}(...).{attr} ({result.__name__})")
    return missing


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_result_attributes_an_example_reads_exist(path: Path) -> None:
    used = _result_attributes(_tree(path))
    assert {"status", "to_dict"} <= {attr for _, attr in used}  # the check sees them
    assert _missing_attributes(used) == []


def test_the_result_attribute_check_refuses_a_wrong_one() -> None:
    tree = ast.parse("def f():\n    report = api.validate(c)\n    return report.failed_erors\n")
    assert _missing_attributes(_result_attributes(tree)) == [
        "api.validate(...).failed_erors (ValidationReport)"]


def test_the_airflow_example_uses_airflow_3_imports() -> None:
    tree = _tree(EXAMPLES[0])
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "airflow.providers.standard.operators.bash" in modules  # not airflow.operators.bash
    assert "airflow.sdk" in modules  # not the deprecated airflow.decorators
