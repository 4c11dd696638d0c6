"""Command line: serve | worker | migrate (server.py), keys | credits (admin.py), edit | jobs
(remote.py).

These command names and flags are a contract that scripts outside the repo rely on.
"""

from __future__ import annotations

import click

from fillframe.cli import admin, remote, server


@click.group()
@click.version_option(package_name="fillframe")
def main() -> None:
    """Fillframe: inpaint and outpaint images through the Apiframe v2 flux-fill-pro API."""


for command in (
    server.serve,
    server.worker,
    server.migrate,
    admin.keys,
    admin.credits,
    remote.edit,
    remote.jobs,
):
    main.add_command(command)
