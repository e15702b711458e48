"""Schemathesis against the served OpenAPI document: no request, valid or not, gets a 5xx.

Bounded (a few derandomised examples per operation, valid and invalid) so that it stays fast and
deterministic. Valid requests are sent as an annotator (mostly refusals) and, with the path
pinned to a real project and item, as a global administrator (the deepest code paths); invalid
ones as the administrator, so they pass authorisation and reach validation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from test_api_support import Seeded, bearer, seed
from truthset.api.app import create_app
from truthset.store.models import Item
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

#: Examples per operation and mode; raise it (``TRUTHSET_FUZZ_EXAMPLES=200``) for a deep hunt.
MAX_EXAMPLES = int(os.environ.get("TRUTHSET_FUZZ_EXAMPLES", "4"))


@dataclass
class Fuzzed:
    """The app under test and its credentials."""

    app: FastAPI
    seeded: Seeded


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    ws = Workspace.init(tmp / "ws", database_url=f"sqlite:///{tmp / 'ws.db'}")
    seeded = seed(ws, tmp)
    with ws.unit("seed") as s:
        alpha = projects.get_project(s, "alpha")
        for name, label in (("annotator", "nodule"), ("annotator2", "normal")):
            author = users.get_user(s, name)
            for item_id in seeded.items["alpha"]:
                item = s.get(Item, item_id)
                record_annotation(s, alpha, item=item, author=author, payload={"label": label})
    try:
        yield Fuzzed(create_app(ws), seeded)
    finally:
        ws.close()


def _operations(app: FastAPI) -> list[Any]:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in loaded.get_all_operations()]


@pytest.mark.parametrize(("mode", "pinned", "caller"),
                         [(GenerationMode.POSITIVE, False, "annotator"),
                          (GenerationMode.POSITIVE, True, "root"),
                          (GenerationMode.NEGATIVE, False, "root")],
                         ids=["valid", "valid-in-alpha", "invalid"])
def test_no_server_errors(fuzzed: Fuzzed, mode: GenerationMode, pinned: bool,
                          caller: str) -> None:
    """Every operation, fed generated requests (``valid-in-alpha`` pins the path to a real
    project and item, so the requests reach the services), answers below 500."""
    failures: list[str] = []
    for operation in _operations(fuzzed.app):
        path_parameters = None
        if pinned:
            names = {p.name for p in operation.path_parameters}
            real = {"key": "alpha", "item_id": fuzzed.seeded.items["alpha"][0],
                    "username": "annotator", "version": 1, "index": 0}
            path_parameters = {k: v for k, v in real.items() if k in names} or None

        @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=MAX_EXAMPLES <= 10,
                  database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate])
        def run(case: Any) -> None:
            response = case.call(headers=bearer(fuzzed.seeded.tokens[caller]))
            if response.status_code >= 500:
                failures.append(f"{caller} {case.method} {case.formatted_path} "
                                f"-> {response.status_code}: {response.text[:300]}")

        try:
            run()
        except Unsatisfiable:  # nothing invalid can be made for this operation
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n".join(failures[:20])

