"""Client tests run against a live server on the `sleep` test engine (fills the mask mid-grey)."""

from __future__ import annotations

import re

from tests.utils.servers import cli


def create_key_with_id(env: dict[str, str], name: str, credits: int | None = None) -> tuple[str, str]:
    """(api key, key id) from `fillframe keys create`."""
    args = ["keys", "create", "--name", name]
    if credits is not None:
        args += ["--credits", str(credits)]
    lines = cli(env, *args).stdout.strip().splitlines()
    match = re.match(r"Created key (\S+) ", lines[0])
    assert match, lines
    return lines[-1], match.group(1)
