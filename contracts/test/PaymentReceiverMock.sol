// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IJobMarket} from "../src/IJobMarket.sol";
import {IDatasetRegistry} from "../src/IDatasetRegistry.sol";

/**
 * @title PaymentReceiverMock
 * @notice Test helper: a provider contract whose ether receipt can be refused or can re-enter
 * {IJobMarket-withdraw}, to exercise JobMarketWithdrawFailed and the reentrancy guard.
 */
contract PaymentReceiverMock {
    /// @notice What `receive` does.
    enum Mode {
        Accept, // 0: keep the ether
        Reject, // 1: revert
        Reenter // 2: call withdraw again (the guard makes it revert)
    }

    IJobMarket public immutable market;
    Mode public mode;

    constructor(IJobMarket market_) {
        market = market_;
    }

    /// @notice Sets how the next ether receipt behaves.
    function setMode(Mode mode_) external {
        mode = mode_;
    }

    /// @notice Lists a dataset with this contract as provider.
    function listDataset(bytes32 contentHash, IDatasetRegistry.Terms calldata terms) external returns (uint256) {
        return market.listDataset(contentHash, bytes32(0), "mock://", terms, new address[](0));
    }

    /// @notice Withdraws this contract's pending payments from the market.
    function withdraw() external {
        market.withdraw();
    }

    receive() external payable {
        if (mode == Mode.Reject) {
            revert("rejected");
        }
        if (mode == Mode.Reenter) {
            market.withdraw();
        }
    }
}
