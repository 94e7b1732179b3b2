"""Plugins baked into the image that compose and the Helm chart run (README "Shipping a plugin"): the
Dockerfile's ``AOETL_PLUGINS`` build argument is installed by the same pip command as aoetl (a plugin's
dependency on aoetl is this aoetl), the example plugin is in the build context, compose hands the argument
to every service's build, and the chart runs one image, the one its values name, for every service.
Static: no image is built here."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoetl.devstack import SERVICE_NAMES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "compose" / "Dockerfile").read_text()
EXAMPLE = "examples/plugins/aoetl-example-plugin"


def _pip_install() -> list[str]:
    (line,) = [line for line in DOCKERFILE.splitlines() if line.startswith("RUN pip install")]
    return shlex.split(line.removeprefix("RUN ").split("&&")[0])


def test_the_image_installs_the_plugins_argument_with_aoetl_in_one_pip_command() -> None:
    assert re.search(r'^ARG AOETL_PLUGINS=""$', DOCKERFILE, re.M), "no plugins unless asked for"
    assert DOCKERFILE.index("ARG AOETL_PLUGINS") < DOCKERFILE.index("RUN pip install")
    assert _pip_install() == ["pip", "install", ".[${AOETL_EXTRAS}]", "${AOETL_PLUGINS}"]


def test_the_example_plugin_is_in_the_build_context_and_depends_on_this_aoetl() -> None:
    copies = dict(line.split()[1:3] for line in DOCKERFILE.splitlines() if line.startswith("COPY "))
    assert any(EXAMPLE.startswith(source) for source in copies), "the example plugin is not copied in"
    dockerignore = ROOT / ".dockerignore"
    if dockerignore.exists():
        assert not any(
            EXAMPLE.startswith(p.strip().rstrip("/")) for p in dockerignore.read_text().splitlines()
        )
    plugin = tomllib.loads((ROOT / EXAMPLE / "pyproject.toml").read_text())["project"]
    aoetl = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert aoetl["name"] in plugin["dependencies"], (
        "pip resolves the plugin's aoetl to the one installed with it"
    )


def test_compose_hands_the_plugins_argument_to_every_service_build() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    for name in SERVICE_NAMES:
        build = compose["services"][name]["build"]
        assert build["dockerfile"] == "compose/Dockerfile"
        assert build["args"]["AOETL_PLUGINS"] == "${AOETL_PLUGINS:-}", name  # empty unless set


def test_the_chart_runs_the_image_its_values_name_for_every_service() -> None:
    from k8s import render

    # helm comes with make bootstrap (as for tests/unit/test_helm_chart.py): missing, this fails, not skips
    docs = render.documents(
        render.template(sets=("image.repository=registry.example/aoetl-acme", "image.tag=1.2"))
    )
    images = {
        doc["metadata"]["name"]: {c["image"] for c in doc["spec"]["template"]["spec"]["containers"]}
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] in SERVICE_NAMES
    }
    assert set(images) == set(SERVICE_NAMES)
    assert all(found == {"registry.example/aoetl-acme:1.2"} for found in images.values()), images


def test_the_readme_says_how_to_ship_a_plugin() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Shipping a plugin") :]
    section = section[: section.index("\n## ")]
    for needed in ("AOETL_PLUGINS", EXAMPLE, "image.repository", "docker compose"):
        assert needed in section, needed
