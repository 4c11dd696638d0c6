"""Print the README's settings tables from `fillframe.settings` (a test keeps them equal): one per
part of `Settings`, each variable under the first part that reads it, with its bounds."""

from __future__ import annotations

import json
from typing import Any, get_args

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from fillframe.settings import PARTS

_BOUNDS: dict[type, tuple[str, str]] = {Ge: ("ge", ">="), Gt: ("gt", ">"), Le: ("le", "<="), Lt: ("lt", "<")}


def default_text(field: FieldInfo) -> str:
    factory: Any = field.default_factory
    value = factory() if factory is not None else field.default
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def bounds_text(field: FieldInfo) -> str:
    """`>= 1, <= 64` from the field's constraints; lengths of strings and lists in words."""
    found = []
    for rule in field.metadata:
        for kind, (attr, sign) in _BOUNDS.items():
            if isinstance(rule, kind):
                found.append(f"{sign} {getattr(rule, attr)}")
        if isinstance(rule, MinLen):
            found.append(f"{rule.min_length}+ characters")
        if isinstance(rule, MaxLen):
            found.append(f"at most {rule.max_length} items")
    return ", ".join(found)


def is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


def meaning(name: str, field: FieldInfo, part: str) -> str:
    text = str(field.description)
    if is_secret(field):
        text += " A secret: shown as `**********` in reprs and logs."
    also = [r for r in readers(name) if r != part]
    return f"{text} Also read by: {', '.join(also)}." if also else text


def readers(name: str) -> list[str]:
    return [attr for attr, part in PARTS.items() if name in part.model_fields]


def table() -> str:
    sections = []
    listed: set[str] = set()
    for attr, part in PARTS.items():
        rows = [
            f"**`settings.{attr}`** ({part.__name__}): {part.summary}.",
            "",
            "| variable | default | bounds | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in part.model_fields.items():
            if name in listed:
                continue
            listed.add(name)
            cells = [f"`FILLFRAME_{name.upper()}`", default_text(field), bounds_text(field)]
            rows.append(f"| {' | '.join(cells)} | {meaning(name, field, attr)} |")
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


if __name__ == "__main__":
    print(table())
