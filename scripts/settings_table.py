"""Print the README's settings table from `fillframe.settings.Settings` (a test keeps them equal)."""

from __future__ import annotations

import json

from fillframe.settings import Settings


def default_text(field: object) -> str:
    factory = getattr(field, "default_factory", None)
    value = factory() if factory is not None else getattr(field, "default", None)
    if value is None:
        return ""
    if isinstance(value, dict):
        return f"`{json.dumps(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def table() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append(f"| `FILLFRAME_{name.upper()}` | {default_text(field)} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
