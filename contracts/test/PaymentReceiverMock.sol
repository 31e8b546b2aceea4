// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {IJobMarket} from "../src/IJobMarket.sol";
import {IDatasetRegistry} from "../src/IDatasetRegistry.sol";

/**
 * @title PaymentReceiverMock
 * @notice Test helper: a provider or consumer contract whose ether receipt can be refused or can
 * re-enter the market (withdraw again, or cancel a job), to exercise JobMarketWithdrawFailed and
 * the reentrancy guard on withdrawals and refunds. Deployed over a ModelMarket or a
 * CompetitionMarket instead, it acts there through {forward} and exercises the shared
 * PullPayments withdraw the same way (`withdraw()` is the same function in every market).
 */
contract PaymentReceiverMock {
    /// @notice What `receive` does.
    enum Mode {
        Accept, // 0: keep the ether
        Reject, // 1: revert
        Reenter, // 2: call withdraw again (the guard makes it revert)
        ReenterCancel // 3: cancel `reenterJob` and withdraw its refund in the same call
    }

    IJobMarket public immutable market;
    Mode public mode;
    uint256 public reenterJob;

    constructor(IJobMarket market_) {
        market = market_;
    }

    /// @notice Sets how the next ether receipt behaves.
    function setMode(Mode mode_, uint256 jobId) external {
        mode = mode_;
        reenterJob = jobId;
    }

    /// @notice Lists a dataset with this contract as provider.
    function listDataset(bytes32 contentHash, IDatasetRegistry.Terms calldata terms) external returns (uint256) {
        return market.listDataset(contentHash, bytes32(0), "mock://", terms, new address[](0), new bytes32[](0));
    }

    /// @notice Creates a job with this contract as consumer (forwarding msg.value).
    function createJob(IJobMarket.JobRequest calldata request) external payable returns (uint256) {
        return market.createJob{value: msg.value}(request);
    }

    /// @notice Cancels one of this contract's jobs.
    function cancelJob(uint256 jobId) external {
        market.cancelJob(jobId);
    }

    /// @notice Sends `data` with msg.value to the market as this contract (e.g. a
    /// CompetitionMarket's createCompetition), bubbling up its revert.
    function forward(bytes calldata data) external payable returns (bytes memory) {
        return Address.functionCallWithValue(address(market), data, msg.value);
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
        if (mode == Mode.ReenterCancel) {
            market.cancelJob(reenterJob);
            market.withdraw();
        }
    }
}
