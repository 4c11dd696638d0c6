"""Client-side commands: edit (the configured engine in this process, or a job on a server) and
jobs (list, get, cancel on a server), through `fillframe_client`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fillframe.cli.common import load_settings
from fillframe.contract import MAX_SEED, OUTPAINT_PRESETS

if TYPE_CHECKING:
    from fillframe_client import Fillframe

T = TypeVar("T")


def _server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--key", envvar="FILLFRAME_API_KEY", help="API key for --server (env FILLFRAME_API_KEY)."
    )(fn)
    return click.option(
        "--server",
        envvar="FILLFRAME_SERVER",
        help="Base URL of a Fillframe server, e.g. http://127.0.0.1:8000 (env FILLFRAME_SERVER).",
    )(fn)


def _client(server: str | None, key: str | None) -> Fillframe:
    from fillframe_client import Fillframe

    if not server or not key:
        raise click.UsageError("Give --server and --key, or set FILLFRAME_SERVER and FILLFRAME_API_KEY.")
    return Fillframe(server, key)


def _source(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An existing local file, or an http(s) URL (fetched by the server or the local engine)."""
    if value is None or value.lower().startswith(("http://", "https://")):
        return value
    if not Path(value).is_file():
        raise click.BadParameter(f"the file {value!r} does not exist.", param=param)
    return value


def output_target(image: str, output: Path | None, fmt: str | None) -> tuple[Path, str]:
    """Where the result goes and its format: OUTPUT's extension decides, else --format, else jpg.

    Without OUTPUT the file is `<image name>-filled.<fmt>` in the current directory.
    """
    by_suffix = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}
    if output is not None and output.suffix.lower() in by_suffix:
        implied = by_suffix[output.suffix.lower()]
        if fmt is not None and fmt != implied:
            raise click.UsageError(f"--format {fmt} contradicts the output file name {output.name}.")
        return output, implied
    fmt = fmt or "jpg"
    if output is not None:
        return output, fmt
    stem = Path(image.split("?", 1)[0].rstrip("/")).stem or "result"
    return Path(f"{stem}-filled.{fmt}"), fmt


def _progress_bar() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def _expand_sides(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, int] | None:
    """`left=256,right=128` -> {"left": 256, "right": 128}; the API checks the ranges."""
    if value is None:
        return None
    sides: dict[str, int] = {}
    for part in value.split(","):
        name, sep, number = part.strip().partition("=")
        name = name.strip().lower()
        if not sep or name not in ("left", "right", "top", "bottom") or not number.strip().isdigit():
            raise click.BadParameter(
                f"{part.strip()!r} is not SIDE=PIXELS with SIDE left, right, top or bottom."
            )
        sides[name] = int(number)
    return sides


@click.command()
@click.argument("image", callback=_source)
@click.option("--mask", callback=_source, help="Mask file: white = repaint, black = keep; the image's size.")
@click.option("--outpaint", type=click.Choice(OUTPAINT_PRESETS), help="Extend the canvas with this preset.")
@click.option(
    "--expand",
    callback=_expand_sides,
    metavar="SIDE=PX,...",
    help="Extend the canvas by pixels per side instead of a preset, e.g. left=256,right=256 (0-2048).",
)
@click.option("--prompt", required=True, help="What to paint (the classic engine ignores it).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: <image>-filled.<fmt>."
)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), help="Same seed and inputs, same image.")
@click.option("--steps", type=click.IntRange(1, 50))
@click.option("--guidance", type=click.FloatRange(2, 5))
@click.option(
    "--format", "fmt", type=click.Choice(["jpg", "png"]), help="Default: from --output's extension, else jpg."
)
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to wait for a server job.")
@_server_options
def edit(
    image: str,
    mask: str | None,
    outpaint: str | None,
    expand: dict[str, int] | None,
    prompt: str,
    output: Path | None,
    seed: int | None,
    steps: int | None,
    guidance: float | None,
    fmt: str | None,
    timeout: float,
    server: str | None,
    key: str | None,
) -> None:
    """Inpaint IMAGE under --mask, or outpaint it with --outpaint PRESET or --expand SIDE=PX,...

    Without --server the configured engine (FILLFRAME_ENGINE) runs in this process; with it the
    job goes to that server. IMAGE and --mask are files or http(s) URLs. The output path is
    printed on the last line.
    """
    if sum(x is not None for x in (mask, outpaint, expand)) != 1:
        raise click.UsageError(
            "Give exactly one of --mask (inpaint), --outpaint PRESET and --expand SIDE=PX."
        )
    target, fmt = output_target(image, output, fmt)
    given: dict[str, Any] = {"seed": seed, "steps": steps, "guidance": guidance}
    params = {k: v for k, v in given.items() if v is not None}
    params["output_format"] = fmt
    if expand is not None:
        params["expand"] = expand
    if server:
        data, facts = _edit_on_server(server, key, image, mask, outpaint, prompt, params, timeout)
    else:
        data, facts = _edit_locally(image, mask, outpaint, prompt, params)
    target.write_bytes(data)
    click.echo(f"Wrote {len(data)} bytes ({facts}).")
    click.echo(str(target))


def _edit_locally(
    image: str, mask: str | None, outpaint: str | None, prompt: str, params: dict[str, Any]
) -> tuple[bytes, str]:
    from fillframe.engines import create_engine
    from fillframe.errors import FillError
    from fillframe.local import build_request, run_local

    settings = load_settings()
    seed = params.pop("seed", None)
    try:
        request = build_request(image, prompt=prompt, mask=mask, outpaint=outpaint, params=params)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        engine = create_engine(settings)
        engine.load()
    except (RuntimeError, ValueError, ImportError) as exc:
        raise click.ClickException(f"The {settings.engine} engine could not start: {exc}") from None
    with _progress_bar() as bar:
        task = bar.add_task(f"Filling ({engine.name}, local)", total=100)
        try:
            result = run_local(
                request, engine, settings, seed=seed, progress=lambda p: bar.update(task, completed=p)
            )
        except FillError as exc:
            raise click.ClickException(exc.message) from None
    return result.data, f"{result.width}x{result.height}, seed {result.seed}, {engine.name} engine, local"


def _edit_on_server(
    server: str,
    key: str | None,
    image: str,
    mask: str | None,
    outpaint: str | None,
    prompt: str,
    params: dict[str, Any],
    timeout: float,
) -> tuple[bytes, str]:
    from fillframe_client import FillframeError, Job, JobFailedError

    with _client(server, key) as client, _progress_bar() as bar:
        task = bar.add_task("Submitting", total=100)

        def show(job: Job) -> None:
            bar.update(task, completed=job.progress, description=f"{job.status.title()} {job.id[:8]}")

        try:
            job = client.edit_and_wait(
                image,
                mask=mask,
                outpaint=outpaint,
                prompt=prompt,
                timeout=timeout,
                on_progress=show,
                **params,
            )
            data = client.download(job)
        except JobFailedError as exc:
            code = f" ({exc.job.error_code})" if exc.job.error_code else ""
            raise click.ClickException(
                f"Job {exc.job.id} {exc.job.status.lower()}{code}: {exc.job.error}"
            ) from None
        except FillframeError as exc:
            raise click.ClickException(str(exc)) from None
    return data, f"seed {job.seed}, job {job.id}"


@click.group()
def jobs() -> None:
    """List and inspect jobs on a server (--server/--key or FILLFRAME_SERVER/FILLFRAME_API_KEY)."""


def _call_server(fn: Callable[[], T]) -> T:
    from fillframe_client import FillframeError

    try:
        return fn()
    except FillframeError as exc:
        raise click.ClickException(str(exc)) from None


@jobs.command("list")
@click.option("--status", type=click.Choice(["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--cursor", help="The cursor printed under the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON objects, one per line.")
@_server_options
def jobs_list(
    status: str | None, limit: int, cursor: str | None, as_json: bool, server: str | None, key: str | None
) -> None:
    """Your jobs, newest first."""
    with _client(server, key) as client:
        page = _call_server(lambda: client.jobs.list(status=status, limit=limit, cursor=cursor))
    if as_json:
        for job in page.jobs:
            click.echo(json.dumps(job.raw))
        return
    click.echo(f"{'ID':36}  {'STATUS':10}  {'PROG':>4}  {'CREATED':24}  RESULT / ERROR")
    for job in page.jobs:
        outcome = job.images[0] if job.images else (f"{job.error_code}: {job.error}" if job.error else "")
        created = job.created_at or ""
        click.echo(f"{job.id:36}  {job.status:10}  {job.progress:>3}%  {created:24}  {outcome}")
    if page.has_more:
        click.echo(f"More: --cursor {page.next_cursor}")


@jobs.command("get")
@click.argument("job_id")
@_server_options
def jobs_get(job_id: str, server: str | None, key: str | None) -> None:
    """One job, as the API's JSON."""
    with _client(server, key) as client:
        job = _call_server(lambda: client.jobs.get(job_id))
    click.echo(json.dumps(job.raw, indent=2))


@jobs.command("cancel")
@click.argument("job_id")
@_server_options
def jobs_cancel(job_id: str, server: str | None, key: str | None) -> None:
    """Cancel a queued or running job (its credits are refunded)."""
    with _client(server, key) as client:
        job = _call_server(lambda: client.jobs.cancel(job_id))
    click.echo(f"Job {job.id} is {job.status}.")
