"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation gets FUZZ_EXAMPLES generated requests, schema-valid and schema-violating ones,
sent to the app in-process with a real (tiny) exported model and API keys on. Each answer must
not be a 5xx, must have a status, content type and body that the OpenAPI document declares for
that operation, must reject what violates the schema with a 4xx, and (keys on) must be a 401
without the key. Derandomized and without an example database, so a CI run is repeatable.
"""

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.app import create_app
from tests.service.conftest import SHIPPED_MODEL, make_settings

FUZZ_EXAMPLES = 40  # per operation; ~10 operations
KEY = "fuzz-key-0123456789"
LIMITS = {"API_KEYS": KEY, "MAX_FRAMES": 16, "MAX_SAMPLES": 4}  # keeps each case cheap

# The OpenAPI document does not depend on the model, so it is read at import (collection time).
schema = schemathesis.openapi.from_dict(
    create_app(make_settings(SHIPPED_MODEL, **LIMITS)).openapi())
sent: Counter[str] = Counter()  # operation -> requests sent


@pytest.fixture(scope="module")
def fuzz_client(model_dir):
    """A requests-style client calling the app in-process (its lifespan started once)."""
    with asgi.get_client(create_app(make_settings(model_dir, **LIMITS))) as client:
        yield client
    asgi.shutdown_lifespans()
    print(f"\nfuzz: {sum(sent.values())} requests; per operation (undeclared methods apart): "
          + ", ".join(f"{op} {n}" for op, n in sorted(sent.items())))


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_declared_and_no_5xx(case, fuzz_client):
    operation = f"{case.operation.method.upper()} {case.path}"
    sent[operation if case.method.upper() == operation.split()[0] else "other methods"] += 1
    # A schema-valid upload is random bytes, not a video: refusing it with a 400 is right, so
    # the check that schema-valid requests get a 2xx does not apply here.
    case.call_and_validate(session=fuzz_client, base_url="http://testserver",
                           headers={"X-API-Key": KEY},
                           excluded_checks=[positive_data_acceptance])
