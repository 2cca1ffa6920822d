"""Schemathesis against the app's own OpenAPI schema for /api/v1, in process, over tiny random-weight models.

Every operation gets schema-valid and schema-breaking inputs; each response must be a non-5xx that
its documented status codes, content types, headers and body schema describe, and broken inputs
must be refused with a 4xx. The tiny model is installed under the name the schema's examples use
("austen-lstm"), so generated requests reach the model runs, not only the unknown-model 404.
(The schema is loaded at import because schemathesis's lazy fixture loader does not run on pytest 9.)
"""

from __future__ import annotations

import shutil
import tempfile
import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

from app.core.config import Settings
from app.main import create_app
from tests.conftest import write_tiny_model

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES = 100  # per operation and phase: the whole file runs in well under two minutes on 2 cores
# A refused request is any 4xx but "not found" for a route, incl. 413 (body over the limit); never a 5xx.
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}})

ROOT = Path(tempfile.mkdtemp(prefix="rnnscope-fuzz-"))
write_tiny_model(ROOT / "models" / "austen-lstm", "lstm", layers=2, hidden=8)
write_tiny_model(ROOT / "models" / "tiny-gru", "gru", layers=1, hidden=8, seed=1)
APP = create_app(Settings(models_dir=ROOT / "models", data_dir=ROOT / "data", default_model="austen-lstm",
                          rescan_seconds=60, max_chars=400, trace_timeout=20,
                          share_rate_limit=0))  # every generated link reaches the store (tests/app/share/test_limits.py)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def _clean_up():
    yield
    asgi.shutdown_lifespans()  # schemathesis started the app's lifespan: close its share store
    shutil.rmtree(ROOT, ignore_errors=True)


MODELS = ("austen-lstm", "tiny-gru")


def installed(case) -> None:
    """Most schema-valid requests name an installed model, so they get past the 404 to the model runs."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return  # leave schema-breaking requests exactly as generated
    for params in (case.body, case.path_parameters):
        if isinstance(params, dict) and isinstance(params.get("model"), str):
            pick = zlib.crc32(params["model"].encode("utf-8", "replace")) % 4
            if pick < len(MODELS):
                params["model"] = MODELS[pick]


@schema.include(path_regex=r"^/api/v1/").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api_answers_every_generated_request_as_documented(case):
    installed(case)
    response = case.call()
    assert response.status_code < 500, (response.status_code, response.text[:500])
    case.validate_response(response, checks=CHECKS)


def test_the_fuzzing_reached_the_model_runs_and_the_share_store():
    """Guards the test above against passing vacuously (every request a 404 or refused by validation)."""
    service, dynamics = APP.state.service, APP.state.dynamics
    runs = service.traces_run + dynamics.saturation_runs  # traces (trace, probe, span, intervene...) and saturation
    print(f"model runs {service.traces_run} + {dynamics.saturation_runs}, links {APP.state.shares.store.count()}")
    assert runs >= 10
    assert APP.state.shares.store.count() >= 1
