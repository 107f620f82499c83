"""Batch auto-scale formulas, the subset the emulator evaluates.

A formula is statements separated by ``;``, each ``$Name = expression`` (or a user variable
without ``$``). Expressions have numbers, variables, ``+ - * /``, parentheses and ``min``,
``max``; the sample variables ``$PendingTasks``, ``$ActiveTasks`` and ``$RunningTasks`` are their
current value (``.GetSample(...)`` and friends read that value). The result is what the formula
assigns to ``$TargetDedicatedNodes`` and ``$TargetLowPriorityNodes``.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass

_SAMPLE_CALL = re.compile(
    r"\.(GetSample|GetSamplePercent|GetSamplePeriod|Count|HistoryBeginTime)\([^()]*\)", re.I
)
_VARIABLE = re.compile(r"\$([A-Za-z_]\w*)")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCTIONS = {"min": min, "max": max}


class FormulaError(ValueError):
    pass


@dataclass(frozen=True)
class Samples:
    pending_tasks: int = 0
    active_tasks: int = 0
    running_tasks: int = 0


@dataclass(frozen=True)
class Result:
    dedicated: int
    low_priority: int
    text: str


def evaluate(formula: str, samples: Samples) -> Result:
    names: dict[str, float] = {
        "PendingTasks": samples.pending_tasks,
        "ActiveTasks": samples.active_tasks,
        "RunningTasks": samples.running_tasks,
        "TargetDedicatedNodes": 0,
        "TargetLowPriorityNodes": 0,
    }
    for raw in formula.split(";"):
        statement = raw.strip()
        if not statement:
            continue
        name, sep, expression = statement.partition("=")
        name = name.strip().lstrip("$")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise FormulaError(
                f"'{statement}' is not an assignment such as $TargetDedicatedNodes = 2"
            )
        names[name] = _value(expression, names)
    dedicated = _count(names["TargetDedicatedNodes"], "TargetDedicatedNodes")
    low = _count(names["TargetLowPriorityNodes"], "TargetLowPriorityNodes")
    text = f"$TargetDedicatedNodes={dedicated};$TargetLowPriorityNodes={low}"
    return Result(dedicated, low, text)


def _count(value: float, name: str) -> int:
    if value < 0:
        raise FormulaError(f"${name} evaluated to {value}, which is below 0")
    return int(value)


def _value(expression: str, names: dict[str, float]) -> float:
    text = _VARIABLE.sub(r"\1", _SAMPLE_CALL.sub("", expression.strip()))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise FormulaError(f"cannot parse the expression '{expression.strip()}'") from None
    return _eval(tree.body, names, expression.strip())


def _eval(node: ast.AST, names: dict[str, float], source: str) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise FormulaError(f"unknown variable '{node.id}' in '{source}'")
        return float(names[node.id])
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval(node.left, names, source), _eval(node.right, names, source)
        if isinstance(node.op, ast.Div) and right == 0:
            raise FormulaError(f"division by zero in '{source}'")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, names, source)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = _FUNCTIONS.get(node.func.id.lower())
        if function and node.args:
            return float(function(_eval(arg, names, source) for arg in node.args))
    raise FormulaError(f"the emulator cannot evaluate '{source}'")
