"""deploy/kubernetes validates against the Kubernetes schemas (no cluster: kubernetes-validate
carries them) and runs the image the way it is built: its user, its commands, a read-only root."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fillframe.settings import variables
from tests.deploy.settings_doc import ENGINE_SETTINGS, doc_table

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
VERSION = kubernetes_validate.utils.latest_version()
COMMANDS = {"serve", "worker", "migrate"}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def documents() -> list[dict[str, Any]]:
    """Every resource the kustomization lists, as written."""
    docs: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    return {
        name: d["spec"]["template"]["spec"] for name, d in {**by_kind("Deployment"), **by_kind("Job")}.items()
    }


def image_uid() -> int:
    return int(re.search(r"useradd .*--uid (\d+)", (ROOT / "Containerfile").read_text()).group(1))


def test_every_file_in_the_folder_is_listed() -> None:
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == set(kustomization()["resources"])


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_manifest_validates(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_kustomization_renders_and_validates() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert sorted(d["kind"] for d in docs) == sorted(d["kind"] for d in documents())
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    images = {
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"fillframe:latest", "fillframe:flux"}


def test_containers_run_the_image_as_built() -> None:
    for name, pod in pod_specs().items():
        assert pod["securityContext"]["runAsUser"] == image_uid(), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        volumes = {v["name"] for v in pod["volumes"]}
        for container in pod["containers"]:
            assert container["args"][0] in COMMANDS, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert {"/tmp", "/data"} <= set(mounts), f"{name} needs a writable /tmp and /data"
            assert set(mounts.values()) <= volumes, name


def test_the_worker_asks_for_a_gpu_and_the_api_serves_without_one() -> None:
    pods = pod_specs()
    worker = pods["fillframe-worker"]["containers"][0]
    assert worker["args"] == ["worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    api = pods["fillframe-api"]["containers"][0]
    assert api["args"] == ["serve", "--no-worker"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = by_kind("Service")["fillframe"]
    assert (
        service["spec"]["selector"].items()
        <= by_kind("Deployment")["fillframe-api"]["spec"]["template"]["metadata"]["labels"].items()
    )


def role_settings(pod: dict[str, Any]) -> set[str]:
    """The FILLFRAME_* names a pod's container gets: its envFrom sources and its own env."""
    sources = {**by_kind("ConfigMap"), **by_kind("Secret")}
    container = pod["containers"][0]
    names = {e["name"] for e in container.get("env", [])}
    for source in container["envFrom"]:
        ref = source.get("configMapRef") or source["secretRef"]
        doc = sources[ref["name"]]
        names |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    return names


@pytest.mark.parametrize(("deployment", "column"), [("fillframe-api", 0), ("fillframe-worker", 1)])
def test_each_role_has_the_settings_the_doc_names(deployment: str, column: int) -> None:
    settings = role_settings(pod_specs()[deployment])
    fields = variables()
    documented = set(doc_table())
    assert settings <= fields, settings - fields
    for name in settings:
        assert name in documented or name.startswith(ENGINE_SETTINGS), name
    for setting, marks in doc_table().items():
        if marks[column] == "yes":
            assert setting in settings, f"{deployment} lacks {setting}, which docs/deploy.md requires"
        if marks[column] == "no":
            assert setting not in settings, (
                f"{deployment} gets {setting}, which docs/deploy.md says it does not use"
            )
