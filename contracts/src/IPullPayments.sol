// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @title IPullPayments
 * @notice The payments of a market that pays nobody directly: what it owes an account is credited
 * to that account's pending payments ({PaymentCredited}) and the account pulls it with
 * {withdraw}. Every amount is in one currency fixed at deployment ({paymentToken}): the native
 * currency when zero, else that ERC-20. ModelMarket and CompetitionMarket share it
 * ({PullPayments}); JobMarket keeps its own, stake-aware, payment code.
 */
interface IPullPayments {
    /// @dev `sent` native currency was attached; `expected` was needed (the amount in native
    /// mode, zero in token mode).
    error PullPaymentsIncorrectPayment(uint256 sent, uint256 expected);
    /// @dev The token transfer in delivered `received`, not `expected` (fee-on-transfer tokens are
    /// not supported).
    error PullPaymentsTokenTransferShortfall(uint256 expected, uint256 received);
    /// @dev `account` has no pending payment.
    error PullPaymentsNothingToWithdraw(address account);
    /// @dev Sending `amount` native currency to `account` failed.
    error PullPaymentsWithdrawFailed(address account, uint256 amount);

    /// @dev `amount` was credited to `account`'s pending payments, from `id`: the model of a
    /// ModelMarket (a redeemed voucher or a reclaimed channel), the competition of a
    /// CompetitionMarket (a prize or a bought submission).
    event PaymentCredited(address indexed account, uint256 indexed id, uint256 amount);
    /// @dev `account` withdrew `amount`.
    event Withdrawn(address indexed account, uint256 amount);

    /**
     * @notice Sends the caller all its pending payments.
     * @dev Requirements: something pending. The balance is zeroed before the transfer, and the
     * call is non-reentrant. Reverts with {PullPaymentsNothingToWithdraw}, or
     * {PullPaymentsWithdrawFailed} when the native transfer fails (a token's failure bubbles up
     * as OpenZeppelin's `SafeERC20FailedOperation` or the token's own error). Emits {Withdrawn}.
     */
    function withdraw() external;

    /// @notice Amount `account` can withdraw.
    function credits(address account) external view returns (uint256);

    /// @notice The ERC-20 token all payments use, or the zero address for the native currency.
    function paymentToken() external view returns (address);
}
