"""The gateway's statuses for what a key manager that is a service of its own can answer."""

from __future__ import annotations

import pytest

from enclave_worker.remote import NotServed, ServiceFailed, ServiceUnreachable
from marketplace.errors import KeyReleaseRefused
from sterling.gateway.errors import status_of


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ServiceUnreachable("the key manager at http://km:8100 did not answer"), 503),
        (ServiceFailed("the key manager at http://km:8100 answered out of protocol"), 502),
        (NotServed("this key manager serves no model market"), 404),
        (KeyReleaseRefused("not an active inference enclave"), 403),
        (RuntimeError("a bug"), 500),
    ],
)
def test_a_remote_key_manager_s_failures_have_their_own_status(error: BaseException, status: int) -> None:
    assert status_of(error) == status
