"""The payment side of the market clients: the currency a market pays in and its pull payments.

Every Sterling market pays in one currency fixed at deployment: the native currency, or one
ERC-20 token (its ``paymentToken()``). :class:`PaymentCurrency` is that currency's client side,
shared by :class:`~marketplace.contracts.MarketClient` (``JobMarket``),
:class:`~marketplace.model_market.ModelMarketClient` and
:class:`~marketplace.competitions.CompetitionMarketClient`: the token, balances, allowances and
the value to attach to a payment. :class:`PullPaymentsClient` adds ``withdraw`` and ``credits``
of the contracts built on ``PullPayments.sol`` (``ModelMarket``, ``CompetitionMarket``), whose
payment functions, errors and events are one definition (``IPullPayments.sol``); ``JobMarket``
keeps its own payment code, so its client keeps its own ``withdraw``.

Amounts (:data:`~marketplace.chain.Wei`) are in the market's payment unit: wei, or the smallest
unit of its token.
"""

from __future__ import annotations

from typing import ClassVar

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.contract import Contract
from web3.logs import DISCARD

from .abi import ERC20_ABI
from .chain import Chain, TxResult, Wei
from .errors import ConfigError

__all__ = ["PaymentCurrency", "PullPaymentsClient"]


class PaymentCurrency:
    """Mixin of a market client whose contract has ``paymentToken()``: the currency it pays in.

    The client sets ``chain``, ``contract`` and ``address`` in its ``__init__``. The token is
    asked once per client: it is immutable.
    """

    chain: Chain
    contract: Contract
    address: str
    _token: tuple[Contract | None] | None = None
    """The payment token's contract (``None`` in native mode), once asked."""

    def payment_token(self) -> str | None:
        """The ERC-20 token all payments use, or ``None`` when the market pays in the native currency."""
        token = self._token_contract()
        return None if token is None else str(token.address)

    def _token_contract(self) -> Contract | None:
        if self._token is None:
            address = str(self.chain.call(self.contract.functions.paymentToken()))
            token = None if int(address, 16) == 0 else self.chain.w3.eth.contract(address=to_checksum_address(address), abi=ERC20_ABI)
            self._token = (token,)
        return self._token[0]

    def payment_balance(self, account: str) -> Wei:
        """``account``'s balance in the payment currency (native balance, or token ``balanceOf``)."""
        token = self._token_contract()
        if token is None:
            return self.chain.balance(account)
        return Wei(int(self.chain.call(token.functions.balanceOf(account))))

    def payment_allowance(self, owner: str) -> Wei:
        """Tokens ``owner`` lets the market pull (0 in native mode, where nothing is pulled)."""
        token = self._token_contract()
        if token is None:
            return Wei(0)
        return Wei(int(self.chain.call(token.functions.allowance(owner, self.address))))

    def approve_payment(self, owner: LocalAccount, amount: Wei) -> TxResult:
        """Let the market pull up to ``amount`` tokens from ``owner`` (ERC-20 ``approve``).

        Raises:
            ConfigError: the market pays in the native currency.
        """
        token = self._token_contract()
        if token is None:
            raise ConfigError("this market pays in the native currency; there is nothing to approve")
        return self.chain.transact(owner, token.functions.approve(self.address, amount), name="approve (payment token)")

    def _pay(self, payer: LocalAccount, amount: Wei) -> int:
        """The value to attach for a payment of ``amount``: ``amount`` in native mode; in token
        mode 0, after approving the market for ``amount`` if its allowance is lower."""
        if self._token_contract() is None:
            return amount
        if amount and self.payment_allowance(payer.address) < amount:
            self.approve_payment(payer, amount)
        return 0


class PullPaymentsClient(PaymentCurrency):
    """Mixin of a client of a ``PullPayments`` contract: the currency, ``withdraw`` and ``credits``."""

    _WITHDRAW_NAME: ClassVar[str] = "withdraw"
    """The label of a withdrawal in logs and errors (``Chain.transact``'s ``name``)."""

    def withdraw(self, account: LocalAccount) -> tuple[Wei, TxResult]:
        """Send ``account`` all its pending payments (native currency or the payment token).

        Returns:
            The amount withdrawn (from the ``Withdrawn`` event) and the transaction.

        Raises:
            ContractReverted: ``PullPaymentsNothingToWithdraw`` when nothing is pending.
        """
        result = self.chain.transact(account, self.contract.functions.withdraw(), name=self._WITHDRAW_NAME)
        (event,) = self.contract.events.Withdrawn().process_receipt(result.receipt, errors=DISCARD)
        return Wei(int(event["args"]["amount"])), result

    def credits(self, account: str) -> Wei:
        """What ``account`` can withdraw."""
        return Wei(int(self.chain.call(self.contract.functions.credits(account))))
