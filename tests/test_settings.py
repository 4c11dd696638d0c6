"""Settings per component: the same variables as before the split, bounds on every number,
secrets that never show, and one link secret for every process sharing a PostgreSQL database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import SecretStr, ValidationError

from fillframe.db import Database
from fillframe.link_secret import link_secret
from fillframe.settings import PARTS, FluxSettings, LinkSettings, Settings, variables
from tests.utils.backends import create_pg_database, drop_pg_database
from tests.utils.images import box_mask, photo
from tests.utils.jobs import data_uri, edit_body, submit_and_wait
from tests.utils.servers import LiveServer, create_key, drop_backend, fillframe_env

# Every variable the flat Settings read before it was split (README of 2026-12-01): an
# operator's environment from then must keep working as it is.
BEFORE_THE_SPLIT = (
    "DATA_DIR",
    "DATABASE_URL",
    "PUBLIC_URL",
    "ALLOW_PRIVATE_URLS",
    "SECRET",
    "ADMIN_TOKEN",
    "STORAGE_URL",
    "S3_ENDPOINT",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "FILE_URLS",
    "ENGINE",
    "WORKER_CONCURRENCY",
    "ENGINE_MEMORY_LIMIT_MB",
    "MAX_BODY_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_OUTPUT_PIXELS",
    "FETCH_TIMEOUT_SECONDS",
    "MAX_REDIRECTS",
    "MAX_UPLOAD_BYTES",
    "UPLOAD_TTL_HOURS",
    "IDEMPOTENCY_TTL_HOURS",
    "RATE_LIMIT_PER_MINUTE",
    "MAX_WAIT_SECONDS",
    "RETENTION_DAYS",
    "LEASE_SECONDS",
    "MAX_ATTEMPTS",
    "POLL_SECONDS",
    "JOB_TIMEOUT_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "MODEL_COSTS",
    "MAX_CONCURRENT_FETCHES",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "WORKER_METRICS_PORT",
    "WEBHOOK_TIMEOUT_SECONDS",
    "WEBHOOK_SCHEDULE_SCALE",
    "WEBHOOK_CONCURRENCY",
    "WEBHOOK_PER_HOST",
    "FLUX_MODEL",
    "FLUX_TRANSFORMER_FILE",
    "FLUX_DEVICE",
    "FLUX_DTYPE",
    "FLUX_WORKER_INDEX",
    "FLUX_CPU_OFFLOAD",
    "FLUX_OFFLOAD",
    "FLUX_COMPILE",
    "FLUX_FP8",
    "FLUX_MAX_PIXELS",
    "CROP_CONTEXT",
    "CROP_MIN_CONTEXT",
    "FLUX_CACHE_THRESHOLD",
    "FLUX_MAX_BATCH",
    "FLUX_VAE_TILING",
    "FLUX_WARMUP_SIZES",
    "FLUX_GUIDANCE_FACTOR",
    "BFL_API_KEY",
    "BFL_BASE_URL",
    "BFL_GUIDANCE_FACTOR",
    "BFL_POLL_SECONDS",
    "BFL_TIMEOUT_SECONDS",
    "BFL_MAX_PIXELS",
    "BFL_MAX_ACTIVE_TASKS",
)

SECRETS = {
    "secret": "link-secret-9f3e1c55d0a2",
    "admin_token": "operator-token-7b1d40e2c9a8f615",
    "bfl_api_key": "bfl-key-c0ffee5eed4a11",
    "s3_secret_access_key": "s3-secret-ab12cd34ef56",
}


def _numbers() -> list[tuple[str, str, Any]]:
    found = []
    for attr, part in PARTS.items():
        for name, field in part.model_fields.items():
            kinds = set(get_args(field.annotation)) | {field.annotation}
            if kinds & {int, float} and bool not in kinds:
                found.append((attr, name, field))
    return found


def test_every_variable_from_before_the_split_is_still_read() -> None:
    assert {f"FILLFRAME_{name}" for name in BEFORE_THE_SPLIT} <= variables()


@pytest.mark.parametrize(("part", "name", "field"), _numbers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_number_has_a_lower_and_an_upper_bound(part: str, name: str, field: Any) -> None:
    rules = field.metadata
    assert any(isinstance(r, Ge | Gt) for r in rules), f"FILLFRAME_{name.upper()} has no lower bound"
    assert any(isinstance(r, Le | Lt) for r in rules), f"FILLFRAME_{name.upper()} has no upper bound"


@pytest.mark.parametrize(
    ("name", "bad", "good"),
    [
        ("max_pixels", 0, 4096),
        ("lease_seconds", 0, 0.5),
        ("max_attempts", 0, 1),
        ("max_attempts", 101, 100),
        ("retention_days", -1, 3 / 86400),
        ("upload_ttl_hours", 24 * 366, 24 * 365),
        ("webhook_per_host", 0, 1),
        ("worker_metrics_port", 70000, 9100),
        ("max_body_bytes", 10, 64 * 1024),
    ],
)
def test_a_value_out_of_bounds_is_refused_by_its_name(name: str, bad: object, good: object) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**{name: bad})
    assert [e["loc"] for e in refused.value.errors()] == [(name,)]
    Settings(**{name: good})


def test_model_costs_are_bounded_per_model() -> None:
    with pytest.raises(ValidationError):
        Settings(model_costs={"flux-fill-pro": -1})
    assert Settings(model_costs={"flux-fill-pro": 0}).api.model_costs == {"flux-fill-pro": 0}


def test_environment_variables_reach_every_part_that_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILLFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FILLFRAME_LEASE_SECONDS", "7.5")
    monkeypatch.setenv("FILLFRAME_ALLOW_PRIVATE_URLS", "true")
    monkeypatch.setenv("FILLFRAME_CROP_MIN_CONTEXT", "32")
    monkeypatch.setenv("FILLFRAME_BFL_API_KEY", "k")
    settings = Settings()
    assert settings.database.data_dir == settings.storage.data_dir == settings.links.data_dir == tmp_path
    assert settings.database.url == f"sqlite:///{tmp_path}/fillframe.db"
    assert settings.worker.lease_seconds == 7.5
    assert settings.limits.allow_private_urls and settings.webhooks.allow_private_urls
    assert settings.bfl.allow_private_urls
    assert settings.flux.crop_min_context == settings.bfl.crop_min_context == 32
    assert settings.bfl.bfl_api_key == SecretStr("k")
    # Arguments win over the environment, as they did.
    assert Settings(lease_seconds=2).worker.lease_seconds == 2


def test_unknown_argument_is_refused() -> None:
    with pytest.raises(TypeError, match="lease_secs"):
        Settings(lease_secs=5)


def test_every_problem_is_reported_once_without_its_value() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=1.5, admin_token="afk_" + "x" * 30, lease_seconds=-1)
    locs = sorted(e["loc"] for e in refused.value.errors())
    assert locs == [("admin_token",), ("data_dir",), ("lease_seconds",)]  # data_dir: 3 parts, told once
    assert "afk_xxx" not in str(refused.value)


def test_secrets_are_secret_str_and_never_in_repr() -> None:
    settings = Settings(**SECRETS)
    for value in SECRETS.values():
        for shown in (repr(settings), str(settings), settings.model_dump_json()):
            assert value not in shown
    assert settings.links.secret == SecretStr(SECRETS["secret"])
    assert settings.api.admin_token == SecretStr(SECRETS["admin_token"])
    assert settings.bfl.bfl_api_key == SecretStr(SECRETS["bfl_api_key"])
    assert settings.storage.s3_secret_access_key == SecretStr(SECRETS["s3_secret_access_key"])
    # The database URL holds the server's password; the code still gets the whole URL.
    url = "postgresql://fillframe:db-pass-7c41e0@127.0.0.1:5432/fillframe"
    with_db = Settings(database_url=url)
    for shown in (repr(with_db), str(with_db), with_db.model_dump_json()):
        assert "db-pass-7c41e0" not in shown
    assert with_db.database.url == url and with_db.database.is_shared


def test_a_refused_secret_is_not_printed_by_the_cli(tmp_path: Path) -> None:
    token = "afk_" + "s" * 40  # refused: an API key as operator token
    env = fillframe_env(tmp_path)
    env["FILLFRAME_ADMIN_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "fillframe", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "FILLFRAME_ADMIN_TOKEN" in done.stderr
    assert token not in done.stderr + done.stdout


def test_secrets_never_show_in_logs_or_answers(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path, LOG_LEVEL="DEBUG", **{k.upper(): v for k, v in SECRETS.items()})
    server = LiveServer(env)
    try:
        key = create_key(env, "secrets")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as client:
            rgb = photo(size=(64, 48))
            job = submit_and_wait(client, edit_body(data_uri(rgb), data_uri(box_mask(48, 64))))
            assert job["status"] == "COMPLETED", job
            answers = [
                client.get("/v2/me"),
                client.get("/v2/models"),
                client.get(f"/v2/jobs/{job['id']}"),
                client.get("/v2/jobs"),
                client.get("/openapi.json"),
                client.get("/v2/jobs/not-a-uuid"),
                client.post("/v2/images/edit", json={"model": "flux-fill-pro"}),
                client.get("/admin/v1/teams", headers={"Authorization": f"Bearer {'w' * 32}"}),
                client.get(job["result"]["images"][0]),
            ]
    finally:
        server.stop()
    texts = [a.text if not a.headers.get("content-type", "").startswith("image/") else "" for a in answers]
    shown = "\n".join(texts + [str(a.headers) for a in answers] + [server.logs()])
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert server.logs()  # DEBUG: the server did log
    for value in SECRETS.values():
        assert value not in shown


def test_settings_on_two_data_dirs_sharing_postgresql_get_one_link_secret(tmp_path: Path) -> None:
    """Two processes' settings, each with its own data folder, started at the same moment."""
    url = create_pg_database()
    try:
        from fillframe.migrations import upgrade

        upgrade(url)
        machines = [Settings(data_dir=tmp_path / name, database_url=url) for name in ("a", "b")]

        async def both() -> list[bytes]:
            dbs = [Database(s.database.url) for s in machines]
            try:
                pairs = zip(dbs, machines, strict=True)
                return list(await asyncio.gather(*(link_secret(db, s.links) for db, s in pairs)))
            finally:
                for db in dbs:
                    await db.close()

        first, second = asyncio.run(both())
        assert first == second and len(first) >= 48
        assert asyncio.run(both()) == [first, first]  # kept, not made again
        assert not any((tmp_path / name / "secret").exists() for name in ("a", "b"))
        # A configured secret wins over the stored one.
        given = LinkSettings(data_dir=tmp_path / "c", secret="configured-secret")

        async def configured() -> bytes:
            db = Database(url)
            try:
                return await link_secret(db, given)
            finally:
                await db.close()

        assert asyncio.run(configured()) == b"configured-secret"
    finally:
        drop_pg_database(url)


def test_two_servers_on_one_postgresql_sign_links_alike(tmp_path: Path) -> None:
    """A result link made by one machine's server opens on another's: the same signature. (The
    machines share the database and, as they must, the blob store: here one folder.)"""
    (tmp_path / "shared").mkdir()
    env_a = fillframe_env(tmp_path / "a", "postgresql", STORAGE_URL=f"file://{tmp_path}/shared")
    env_b = {**env_a, "FILLFRAME_DATA_DIR": str(tmp_path / "b")}
    servers = [LiveServer(env_a), LiveServer(env_b)]
    try:
        key = create_key(env_a, "links")
        clients = [httpx.Client(base_url=s.url, headers={"X-API-Key": key}, timeout=30) for s in servers]
        rgb = photo(size=(64, 48))
        job = submit_and_wait(clients[0], edit_body(data_uri(rgb), data_uri(box_mask(48, 64))))
        assert job["status"] == "COMPLETED", job
        link_a = job["result"]["images"][0]
        link_b = clients[1].get(f"/v2/jobs/{job['id']}").json()["result"]["images"][0]
        assert link_a.split("?")[1] == link_b.split("?")[1]  # same expiry, same signature
        path_and_query = link_a.split(servers[0].url, 1)[1]
        opened = clients[1].get(path_and_query)
        assert opened.status_code == 200 and opened.headers["content-type"].startswith("image/")
        for client in clients:
            client.close()
        assert not any((tmp_path / name / "secret").exists() for name in ("a", "b"))
    finally:
        for server in servers:
            server.stop()
        drop_backend(env_a)


def test_each_engine_is_built_with_the_part_its_class_names(tmp_path: Path) -> None:
    """A custom engine that names no part reads every setting by its flat name, as before the
    split (`self.settings.lease_seconds`); the built-in engines get their part or nothing."""
    from fillframe.engines.base import create_engine

    def built(engine: str) -> Any:
        return create_engine(Settings(data_dir=tmp_path, engine=engine, lease_seconds=7)).settings

    custom = built("tests.utils.engines:NoopEngine")
    assert (custom.lease_seconds, custom.job_timeout_seconds, custom.data_dir) == (7.0, 900.0, tmp_path)
    assert built("classic") is None and built("telea") is None
    assert isinstance(built("flux"), FluxSettings)
