// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TestStablecoin
/// @notice Test helper: a plain ERC-20 (6 decimals, like USDC) anyone can mint.
contract TestStablecoin is ERC20 {
    constructor() ERC20("Test USD", "tUSD") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

/// @title FeeOnTransferToken
/// @notice Test helper: burns 1 % of every transfer, which the market must refuse.
contract FeeOnTransferToken is ERC20 {
    constructor() ERC20("Fee token", "FEE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from != address(0) && to != address(0)) {
            uint256 fee = value / 100;
            super._update(from, address(0), fee);
            value -= fee;
        }
        super._update(from, to, value);
    }
}

interface IReentryTarget {
    function withdraw() external;
}

/// @title HookToken
/// @notice Test helper: an ERC-20 that calls back `receiver.withdraw()` whenever `receiver` is
/// paid (as ERC-777 hooks would), to show that the market's withdraw cannot be re-entered
/// through its payment token.
contract HookToken is ERC20 {
    IReentryTarget public receiver;

    constructor() ERC20("Hook token", "HOOK") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setReceiver(IReentryTarget receiver_) external {
        receiver = receiver_;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (to == address(receiver) && from != address(0)) {
            receiver.withdraw();
        }
    }
}
