"""A short soak (`keras_fgvc.serving.soak`): valid traffic survives malformed requests and swaps.

Timings and memory are the benchmark's to judge (`benchmarks/serving_soak.py`);
here: no failed valid request, every malformed request refused with an
answer, both swapped-in versions served, the server still up.
"""

import pytest

from keras_fgvc.serving import soak

pytestmark = pytest.mark.slow


def test_quick_soak_has_no_failures_and_refuses_every_malformed_request():
    result = soak.run_soak(duration_s=6.0, quiet_s=2.0, grpc_clients=2, rest_clients=1)
    assert result["failed_valid_requests"] == 0, result["failures"]
    assert result["server_alive"]
    assert result["valid_requests"]["soak"]["count"] > 20
    assert result["goals"]["every_malformed_request_refused"], result["malformed_answers"]
    assert result["goals"]["both_swaps_served"] and len(result["swaps"]) == 2
    answers = result["malformed_answers"]
    assert set(answers["png_header_20000x20000"]) == {"RESOURCE_EXHAUSTED"}
    assert set(answers["chunked_body"]) == {"400"}  # one answer: the body is not a request
    assert set(answers["body_30mb_declared"]) == {"413"}
