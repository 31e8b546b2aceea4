"""`sterling up` reuses its recorded deployment only while it runs the committed contract code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from marketplace import chain as chain_mod
from marketplace.contracts import Deployment, code_version
from marketplace.up import ensure_deployment


def test_recorded_deployment_is_reused_only_for_the_same_code(tmp_path: Path) -> None:
    chain = chain_mod.embedded()
    governance = chain.new_account()
    record = tmp_path / "deployment.json"

    first, fresh = ensure_deployment(chain, governance, record)
    assert fresh and first.code_version == code_version()
    again, fresh = ensure_deployment(chain, governance, record)
    assert not fresh and again == first

    # A record written by other contract code (e.g. before an upgrade of the sources) is stale.
    dataclasses.replace(first, code_version="0123456789abcdef").save(record)
    redeployed, fresh = ensure_deployment(chain, governance, record)
    assert fresh and redeployed.market != first.market
    assert Deployment.load(record) == redeployed
