"""Rules are data (``default_rules.json`` or a file named in the config), evaluated here.

A rule compares one input (a feature, or a numeric event field such as ``amount``)
with a constant and, when it fires, proposes an outcome. The decision takes the
most severe of the fired rules' and the model's outcomes.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.json")


class Outcome(str, Enum):
    APPROVE = "APPROVE"
    REVIEW = "REVIEW"
    DECLINE = "DECLINE"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Outcome.APPROVE: 0, Outcome.REVIEW: 1, Outcome.DECLINE: 2}

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}
EVENT_INPUTS = frozenset({"amount"})


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    input: str = Field(min_length=1)
    op: Literal[">=", ">", "<=", "<", "==", "!="]
    value: float
    outcome: Outcome

    @field_validator("outcome")
    @classmethod
    def _not_approve(cls, v: Outcome) -> Outcome:
        if v is Outcome.APPROVE:
            raise ValueError("a rule proposes REVIEW or DECLINE; APPROVE is the default")
        return v

    @property
    def expression(self) -> str:
        value = int(self.value) if self.value.is_integer() else self.value
        return f"{self.input} {self.op} {value}"

    def fires(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)


class RuleSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    rules: tuple[Rule, ...]

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        ids = [r.id for r in rules]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate rule ids in {ids}")
        return rules

    def check_inputs(self, feature_names: tuple[str, ...]) -> None:
        """Fail at start-up, not per event, when a rule reads an unknown input."""
        known = set(feature_names) | EVENT_INPUTS
        unknown = sorted({r.input for r in self.rules} - known)
        if unknown:
            raise ValueError(f"rules read unknown inputs {unknown}; known: {sorted(known)}")


def load_rules(path: str | Path | None = None) -> RuleSet:
    file = Path(path) if path else DEFAULT_RULES_FILE
    if not file.exists():
        raise FileNotFoundError(f"rules file {file} not found: fix rules_file in the config")
    return RuleSet.model_validate(json.loads(file.read_text()))


def evaluate_rules(
    rules: RuleSet, event: Mapping[str, Any], features: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Every rule with its input value and whether it fired (all go into the trace)."""
    results = []
    for rule in rules.rules:
        value = event[rule.input] if rule.input in EVENT_INPUTS else features[rule.input]
        results.append({
            "id": rule.id,
            "when": rule.expression,
            "inputs": {rule.input: value},
            "fired": rule.fires(value),
            "outcome": rule.outcome.value,
        })
    return results
