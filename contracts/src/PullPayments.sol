// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IPullPayments} from "./IPullPayments.sol";

/**
 * @title PullPayments
 * @notice The payment code ModelMarket and CompetitionMarket share (see {IPullPayments}): the
 * payment currency, taking a payment ({_collect}), crediting an account ({_credit}) and the
 * account's {withdraw}.
 * @dev The deriving market calls {_collect} in its payable functions, after its own state
 * changes (they must be `nonReentrant`, as {withdraw} is), and {_credit} for everything it owes.
 * Its balance (native or token) is then Σ credits + whatever the market itself holds in escrow.
 * JobMarket does not use it: its payments also cover stakes and change, and its code size has
 * little headroom.
 */
abstract contract PullPayments is IPullPayments, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev An account's payments, in one slot. Once an account has withdrawn, `withdrawn` keeps
    /// the slot non-zero, so later credits cost an update instead of a fresh write.
    struct Balance {
        uint128 pending;
        uint128 withdrawn;
    }

    IERC20 private immutable _token;
    mapping(address account => Balance) private _balances;

    /// @param token The ERC-20 token payments use, or the zero address for the native currency.
    constructor(IERC20 token) {
        _token = token;
    }

    /// @inheritdoc IPullPayments
    function withdraw() external nonReentrant {
        Balance memory balance = _balances[msg.sender];
        uint256 amount = balance.pending;
        if (amount == 0) {
            revert PullPaymentsNothingToWithdraw(msg.sender);
        }
        _balances[msg.sender] = Balance({pending: 0, withdrawn: balance.withdrawn + balance.pending});
        emit Withdrawn(msg.sender, amount);
        if (address(_token) != address(0)) {
            _token.safeTransfer(msg.sender, amount);
        } else {
            (bool success,) = payable(msg.sender).call{value: amount}("");
            if (!success) {
                revert PullPaymentsWithdrawFailed(msg.sender, amount);
            }
        }
    }

    /// @inheritdoc IPullPayments
    function credits(address account) external view returns (uint256) {
        return _balances[account].pending;
    }

    /// @inheritdoc IPullPayments
    function paymentToken() external view returns (address) {
        return address(_token);
    }

    /// @dev Takes a payment of `amount` (`sent` is msg.value, passed by the payable caller):
    /// `sent` in native mode, else `amount` tokens pulled with transferFrom, which must all
    /// arrive. Call it after the state was updated, from a `nonReentrant` function.
    function _collect(uint256 amount, uint256 sent) internal {
        if (address(_token) == address(0)) {
            if (sent != amount) {
                revert PullPaymentsIncorrectPayment(sent, amount);
            }
        } else {
            if (sent != 0) {
                revert PullPaymentsIncorrectPayment(sent, 0);
            }
            uint256 before = _token.balanceOf(address(this));
            _token.safeTransferFrom(msg.sender, address(this), amount);
            uint256 received = _token.balanceOf(address(this)) - before;
            if (received != amount) {
                revert PullPaymentsTokenTransferShortfall(amount, received);
            }
        }
    }

    /// @dev Adds `amount` to `account`'s pending payments and emits {PaymentCredited} with `id`
    /// (the model or competition it comes from); zero is skipped.
    function _credit(address account, uint256 id, uint128 amount) internal {
        if (amount == 0) {
            return;
        }
        _balances[account].pending += amount;
        emit PaymentCredited(account, id, amount);
    }
}
