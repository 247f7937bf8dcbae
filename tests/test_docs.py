"""docs/method.md gives every tuned number of the package with its current value, as `Class.field` = `value`:
the evidence it cites is about the numbers the code uses."""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import re
from pathlib import Path

import pytest

from diffmorph.evaluate import MeltParams
from diffmorph.params import Params

METHOD = Path(__file__).resolve().parents[1] / "docs" / "method.md"
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.Pow: operator.pow}


def value(text: str):
    """A number, a string or a tuple of them as the doc writes it (``1 / 16``, ``2.0**0.5``, ``1e-3``)."""
    def evaluate(node: ast.AST):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Tuple):
            return tuple(evaluate(item) for item in node.elts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right))
        raise ValueError(f"not a plain value: {text}")
    return evaluate(ast.parse(text, mode="eval").body)


def same(documented, actual) -> bool:
    if isinstance(actual, tuple):
        return isinstance(documented, tuple) and len(documented) == len(actual) and all(
            same(d, a) for d, a in zip(documented, actual, strict=True))
    if isinstance(actual, float):
        return isinstance(documented, int | float) and math.isclose(documented, actual, rel_tol=1e-9)
    return documented == actual


def tuned_numbers() -> list[tuple[str, object]]:
    """``("Class.field", default)`` for every field of Params' parameter classes, and of MeltParams."""
    found, queue, seen = [], [Params(), MeltParams()], set()
    while queue:
        params = queue.pop()
        if type(params) in seen:
            continue
        seen.add(type(params))
        for field in dataclasses.fields(params):
            default = getattr(params, field.name)
            if dataclasses.is_dataclass(default):
                queue.append(default)
            elif type(params) is not Params:
                found.append((f"{type(params).__name__}.{field.name}", default))
    return sorted(found)


@pytest.mark.parametrize(("name", "default"), tuned_numbers())
def test_method_gives_each_tuned_number_as_the_code_has_it(name, default):
    lines = re.findall(rf"^- `{re.escape(name)}` = `([^`]*)`", METHOD.read_text(), flags=re.MULTILINE)
    assert len(lines) == 1, f"docs/method.md should give `{name}` = `...` once, in a line of its own"
    assert same(value(lines[0]), default), f"docs/method.md gives {name} = {lines[0]}, the code {default!r}"


def test_the_values_are_read_as_numbers():
    assert value("1 / 16") == 0.0625 and value("2.0**0.5") == pytest.approx(2**0.5)
    assert value('(0.8, "robust")') == (0.8, "robust") and not same(value("1e-3"), 0.002)
    assert len(tuned_numbers()) > 60


def test_method_names_only_what_the_code_has():
    """Constants and helpers it names exist in src (old names linger after a reshape)."""
    text = METHOD.read_text()
    source = "".join(path.read_text() for path in (METHOD.parents[1] / "src" / "diffmorph").rglob("*.py"))
    constants = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", text))
    helpers = set(re.findall(r"(?<![\w.])_[a-z][a-z_]+\b", text))
    assert sorted(name for name in constants if name not in source) == []
    assert sorted(name for name in helpers if f"def {name}(" not in source) == []


def test_method_names_only_modules_that_exist_and_no_dates():
    """Every file and module it names is in the repository; its figures are evidence for a choice, not
    history (that is CHANGELOG.md's and the benchmark tables')."""
    text = METHOD.read_text()
    root = METHOD.parents[1]
    files = {path.name for folder in ("src", "benchmarks", "scripts") for path in (root / folder).rglob("*.py")}
    named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", text))
    assert len(named) > 5 and sorted(named - files) == []
    missing = [name for name in set(re.findall(r"`(diffmorph(?:\.\w+)+)`", text)) if not _names_code(root, name)]
    assert sorted(missing) == []
    assert re.findall(r"\b20\d\d-\d\d-\d\d\b", text) == []


def _names_code(root: Path, dotted: str) -> bool:
    """Whether ``dotted`` is a module of the package, or a name its longest module prefix holds."""
    parts = dotted.split(".")
    for count in range(len(parts), 0, -1):
        base = root / "src" / Path(*parts[:count])
        path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if path.exists():
            return count == len(parts) or re.search(rf"\b{parts[count]}\b", path.read_text()) is not None
    return False
