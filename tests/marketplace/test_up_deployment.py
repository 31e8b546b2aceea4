"""`sterling up` reuses its recorded deployment only while it runs the committed contract code, and funds its accounts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from marketplace import chain as chain_mod
from marketplace.chain import Wei
from marketplace.contracts import Deployment, code_version
from marketplace.errors import ConfigError
from sterling.up import FUNDING, ensure_deployment, ensure_funded


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


def test_ensure_funded_tops_up_only_poor_accounts_and_lists_them_when_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = chain_mod.embedded()
    rich, poor = chain.new_account(), chain.new_account(fund=Wei(0))
    before = chain.balance(rich.address)
    ensure_funded(chain, (rich, poor))
    assert chain.balance(rich.address) == before  # above the minimum: left alone
    assert chain.balance(poor.address) == FUNDING

    # A node without an unlocked development account (a public network): nothing to fund from.
    broke = chain.new_account(fund=Wei(0))
    monkeypatch.setattr(chain, "_development_account", lambda: None)
    with pytest.raises(ConfigError, match=broke.address) as raised:
        ensure_funded(chain, (rich, broke))
    assert rich.address not in str(raised.value)
