"""deploy/compose.yaml parses, has the roles docs/deploy.md describes, and wires each role with
the settings docs/deploy.md says that role needs (and only real settings)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from fillframe.settings import variables
from tests.deploy.settings_doc import ENGINE_SETTINGS, doc_table

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
ENV = {"FILLFRAME_SECRET": "s3cret"}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, over the whole document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, kind, arg = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise ValueError(f"{name}: {arg}")
        return arg if kind == "-" else ""

    return VARIABLE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def services(env: dict[str, str] = ENV) -> dict[str, dict[str, Any]]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)["services"]


def fillframe_services(role: list[str]) -> dict[str, dict[str, Any]]:
    """Services of the default profile running `fillframe ROLE...`."""
    return {name: s for name, s in services().items() if s.get("command") == role and not s.get("profiles")}


def test_compose_has_each_role() -> None:
    names = services()
    assert any("postgres" in s["image"] for s in names.values())
    assert any("minio" in s["image"] for s in names.values())
    apis = fillframe_services(["serve", "--no-worker"])
    assert len(apis) == 2
    ports = [s["ports"][0].split(":")[0] for s in apis.values()]
    assert len(set(ports)) == 2, ports
    assert len(fillframe_services(["worker"])) == 1
    assert len(fillframe_services(["migrate"])) == 1


def test_the_doc_table_is_read() -> None:
    needs = doc_table()
    assert needs["FILLFRAME_DATABASE_URL"] == ("yes", "yes")
    assert needs["FILLFRAME_S3_SECRET_ACCESS_KEY"] == ("yes", "yes")
    assert needs["FILLFRAME_ENGINE"] == ("no", "yes")


@pytest.mark.parametrize(("role", "column"), [(["serve", "--no-worker"], 0), (["worker"], 1)])
def test_each_role_has_the_settings_the_doc_names(role: list[str], column: int) -> None:
    needs = doc_table()
    for name, service in fillframe_services(role).items():
        env = service["environment"]
        for setting, marks in needs.items():
            if marks[column] == "yes":
                assert setting in env, f"{name} lacks {setting}, which docs/deploy.md requires"
            if marks[column] == "no":
                assert setting not in env, f"{name} sets {setting}, which docs/deploy.md says it does not use"


def test_every_setting_in_compose_is_real_and_documented() -> None:
    documented = set(doc_table())
    fields = variables()
    for name, service in services().items():
        for setting in service.get("environment", {}):
            if not setting.startswith("FILLFRAME_"):
                continue
            assert setting in fields, f"{name}: {setting} is no setting"
            assert setting in documented or setting.startswith(ENGINE_SETTINGS), (
                f"{name}: {setting} is not in docs/deploy.md's table"
            )


def test_the_wiring_points_at_the_services() -> None:
    names = services()
    for service in fillframe_services(["serve", "--no-worker"]).values():
        env = service["environment"]
        database = urlsplit(env["FILLFRAME_DATABASE_URL"])
        assert "postgres" in names[database.hostname]["image"]
        assert database.path.lstrip("/") == names[database.hostname]["environment"]["POSTGRES_DB"]
        assert database.password == names[database.hostname]["environment"]["POSTGRES_PASSWORD"]
        s3 = urlsplit(env["FILLFRAME_S3_ENDPOINT"])
        minio = names[s3.hostname]
        assert env["FILLFRAME_S3_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
        assert env["FILLFRAME_S3_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
        bucket = urlsplit(env["FILLFRAME_STORAGE_URL"]).hostname
        assert f"store/{bucket}" in " ".join(names["bucket"]["entrypoint"])
        assert env["FILLFRAME_SECRET"] == ENV["FILLFRAME_SECRET"]


def test_the_secret_must_be_given() -> None:
    with pytest.raises(ValueError, match="FILLFRAME_SECRET"):
        services({})
