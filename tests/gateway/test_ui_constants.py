"""The browser UI copies no constant that mirrors the chain: it reads them from ``GET /api/config``.

The ε/δ scales, the job and dataset statuses and the enclave roles are defined once, in
``enclave_worker/trusted/onchain.py``; the ERC-20 fragment once, in ``marketplace/abi.py``; the
contracts' ABIs are the generated ``web/js/abi.js`` (checked against the artifacts elsewhere) and
their public constants (``MAX_DATASETS_PER_JOB``...) are read from the contract. This scans
``web/`` for copies: scale literals, arrays or maps of status or role names, role numbers, and
human-readable ABI fragments; and checks that every status or role the UI names is one the
chain has. No browser needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from enclave_worker.trusted.onchain import DatasetStatus, JobStatus, Role

WEB = Path(__file__).resolve().parents[2] / "web"
GENERATED = {Path("js/abi.js")}
"""Generated from the contracts' artifacts by ``marketplace.compile``, not written by hand."""

STATUS_NAMES = frozenset(m.name.lower() for enum_type in (JobStatus, DatasetStatus) for m in enum_type)
ROLE_NAMES = frozenset(m.name.lower() for m in Role)
NAMES = STATUS_NAMES | ROLE_NAMES

_NAME = "|".join(sorted(NAMES, key=len, reverse=True))
_ZEROS_6, _ZEROS_18 = r"(?:_?000){2}", r"(?:_?000){6}"
SCALE_LITERAL = re.compile(
    r"\b1e\+?(?:6|18)\b|\b1e-(?:6|18)\b"  # 1e6, 1e18, 1e-6
    rf"|\b10n?\s*\*\*\s*(?:6|18)n?\b|Math\.pow\(\s*10\s*,\s*(?:6|18)\s*\)"  # 10 ** 6, 10n ** 18n, Math.pow(10, 18)
    rf"|\b1(?:{_ZEROS_6}|{_ZEROS_18})n?\b"  # 1000000, 1_000_000, 10^18 spelled out
    r"|\b0\.0{5}1\b|\b0\.0{17}1\b",  # 0.000001, 10^-18 spelled out
    re.IGNORECASE,
)
ELEMENT_NAME = re.compile(rf"""[\[,]\s*["'`]({_NAME})["'`]\s*(?=[,\]])""", re.IGNORECASE)
"""A status or role name as an element of an array literal."""
ARRAY = re.compile(r"\[[^\[\]]*\]")
OBJECT = re.compile(r"\{[^{}]*\}")
KEY_NAME = re.compile(rf"""(?:^|[{{,])\s*["']?({_NAME})["']?\s*:""", re.IGNORECASE)
NAME_NUMBER_PAIR = re.compile(rf"""["']?\b({_NAME})\b["']?\s*:\s*\d|\b\d+\s*:\s*["']({_NAME})["']""", re.IGNORECASE)
ROLE_NUMBER_ARGUMENT = re.compile(r"\bisActive\([^()]*,\s*\d+\s*\)")
ABI_FRAGMENT = re.compile(r"""["'`]\s*(?:function|event|error)\s+\w+\s*\(""")
STATUS_COMPARED = re.compile(r"""\bstatus\s*[!=]==?\s*["']([^"']*)["']|["']([^"']*)["']\s*[!=]==?\s*[\w.]*\bstatus\b""")
ROLE_NAMED = re.compile(r"""\broleNumber\(\s*["']([^"']*)["']\s*\)""")


@dataclass(frozen=True)
class Copy:
    """A constant the UI copies instead of reading it from /api/config."""

    path: str
    line: int
    what: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}: {self.text}"


def _line(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def copies_in(source: str, path: str) -> list[Copy]:
    """Every copy of a chain constant in one file of the UI."""
    found: list[Copy] = []

    def add(match: re.Match[str], what: str) -> None:
        found.append(Copy(path, _line(source, match.start()), what, " ".join(match.group(0).split())[:120]))

    for m in SCALE_LITERAL.finditer(source):
        add(m, "ε/δ scale literal (use onchain.js: epsilonUnits, deltaUnits, epsilonFromUnits)")
    for m in ARRAY.finditer(source):
        if len({n.lower() for n in ELEMENT_NAME.findall(m.group(0))}) >= 2:
            add(m, "array of status or role names (use onchain.js: datasetStatusNames, ...)")
    for m in OBJECT.finditer(source):
        if len({n.lower() for n in KEY_NAME.findall(m.group(0))}) >= 2:
            add(m, "map keyed by status or role names (compare names in format.js's status helpers)")
    for m in NAME_NUMBER_PAIR.finditer(source):
        add(m, "status or role name paired with its number (use onchain.js)")
    for m in ROLE_NUMBER_ARGUMENT.finditer(source):
        add(m, "role number (use onchain.js: roleNumber)")
    for m in ABI_FRAGMENT.finditer(source):
        add(m, "hand-written ABI fragment (use abi.js, or onchain.js: erc20Abi)")
    for m in STATUS_COMPARED.finditer(source):
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if name not in STATUS_NAMES:
            add(m, f"status {name!r} is none the chain has ({', '.join(sorted(STATUS_NAMES))})")
    for m in ROLE_NAMED.finditer(source):
        if m.group(1) not in ROLE_NAMES:
            add(m, f"role {m.group(1)!r} is none the chain has ({', '.join(sorted(ROLE_NAMES))})")
    return found


def ui_sources(root: Path) -> dict[str, str]:
    """The UI's hand-written scripts and pages under ``root`` (``web/``), by relative path."""
    files = sorted(p for pattern in ("**/*.js", "**/*.html") for p in root.glob(pattern))
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in files if p.relative_to(root) not in GENERATED}


def test_the_ui_copies_no_chain_constant() -> None:
    sources = ui_sources(WEB)
    assert "js/onchain.js" in sources and "js/pages/create-job.js" in sources  # the scan sees the UI
    found = [copy for path, source in sources.items() for copy in copies_in(source, path)]
    assert not found, "constants copied into the UI instead of read from /api/config:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(
    "snippet",
    [  # each as the UI once had it
        "epsilon: BigInt(Math.round(state.epsilon * 1e6)),",
        "maxDelta: BigInt(Math.round(maxDelta * 1e18)),",
        "`${Number(remaining) / 1e6} ε left`",
        '<input id="max-eps" type="number" min="0.000001">',
        "const scale = 10n ** 18n;",
        "const EPS = 1_000_000;",
        'const DATASET_STATUS = ["active", "paused", "delisted"];',
        'const CHOICES = [["", "Active and paused", []], ["all", "All", ["active", "paused", "delisted"]]];',
        'const TONES = { OPEN: "warn", CLAIMED: "warn", COMPLETED: "ok", EXPIRED: "bad", CANCELLED: "bad" };',
        'const UNAVAILABLE = { paused: "paused by its provider", delisted: "delisted" };',
        "const CODES = { open: 1, claimed: 2 };",
        "registry.isActive(signer, 2)",
        'const ERC20_ABI = ["function approve(address spender, uint256 amount) returns (bool)"];',
        'if (job.status === "OPEN") cancel();',
        'if (d.status !== "listed") warn();',
        'registry.isActive(signer, roleNumber("keymanager"))',
    ],
)
def test_the_scan_finds_each_kind_of_copy(snippet: str) -> None:
    assert copies_in(snippet, "snippet.js"), snippet


@pytest.mark.parametrize(
    "snippet",
    [  # what the UI legitimately holds
        "epsilon: epsilonUnits(state.epsilon),",
        'if (job.status === "open" && mine) cancel();',
        'const tone = status === "completed" ? "ok" : "warn";',
        'registry.isActive(signer, roleNumber("key_manager"))',
        "if (epsilon > d.max_epsilon_per_job + 1e-12) reasons.push(reason);",
        "const head = await file.slice(0, 1 << 16).text();",
        'let currency = { symbol: "ETH", decimals: 18, token: null };',
        "setTimeout(() => URL.revokeObjectURL(url), 10_000);",
        '[{ key: "created", state: "done" }, { key: "claimed", state: "done" }, { key: "expired", state: "failed" }]',
        'const [active, enclave] = await Promise.all([registry.isActive(signer, roleNumber("key_manager")), registry.enclaveOf(signer)]);',
    ],
)
def test_the_scan_lets_the_ui_name_statuses_and_use_other_numbers(snippet: str) -> None:
    assert not copies_in(snippet, "snippet.js"), copies_in(snippet, "snippet.js")
