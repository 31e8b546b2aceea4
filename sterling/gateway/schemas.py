"""Request and response models of the gateway API (``XCreate`` in, ``XPublic`` out).

Units: ε values are floats (the contracts' micro-units / 1e6), δ floats (units / 1e18), wei
amounts decimal strings (they exceed JavaScript's safe integers), hashes and keys ``0x`` hex,
times unix seconds, addresses EIP-55 checksummed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HEX32_PATTERN = r"^(0x)?[0-9a-fA-F]{64}$"
ADDRESS_PATTERN = r"^(0x)?[0-9a-fA-F]{40}$"

JobStatusName = Literal["open", "claimed", "completed", "expired", "cancelled"]
DatasetStatusName = Literal["active", "paused", "delisted"]
DatasetSort = Literal["price", "-price", "remaining_epsilon", "-remaining_epsilon", "listed", "-listed", "title", "-title", "rows", "-rows"]
BudgetKind = Literal["listed", "reserved", "released", "debited", "topped_up", "terms_updated"]
TimelineStage = Literal["created", "claimed", "renewed", "released", "charged", "slashed", "settled", "expired", "cancelled"]
PaymentKind = Literal["credited", "withdrawn"]
PaymentReason = Literal["payout", "refund", "change", "slash", "stake"]
RoleName = Literal["trainer", "key_manager", "inference", "evaluator"]


class ErrorPublic(BaseModel):
    """Every error response: a human-readable reason."""

    detail: str


class HealthPublic(BaseModel):
    status: Literal["ok"]
    chain_id: int
    head_block: int
    indexed_block: int = Field(description="last block committed to the index")
    lag_blocks: int = Field(description="head_block - indexed_block")
    market_paused: bool = Field(
        description="the market's emergency stop, as of the indexed block: no new listings, jobs, claims or settlements"
    )
    age_ms: float = Field(ge=0, description="how old these figures are (≤ health_max_age_seconds; a few seconds while a read is slow)")


class ContractsPublic(BaseModel):
    job_market: str
    enclave_registry: str
    model_market: str | None = Field(default=None, description="the model market served models are listed on (none: no serving)")
    competitions: str | None = Field(default=None, description="the competition market (none: no competitions)")


class KeyManagerPublic(BaseModel):
    """The key manager enclave this gateway forwards deposits to, as attested on-chain."""

    signer: str
    encryption_key: str = Field(description="the attested X25519 key data keys are HPKE-wrapped to (from the registry)")
    measurement: str
    valid_until: int
    active: bool


class DevAccountPublic(BaseModel):
    """A funded development account (local chains only; never on a real network)."""

    address: str
    private_key: str


class PaymentTokenPublic(BaseModel):
    """The ERC-20 token the market is paid in (token mode)."""

    address: str
    symbol: str
    decimals: int


class ConfigPublic(BaseModel):
    chain_id: int
    chain_kind: Literal["embedded", "anvil", "rpc"]
    rpc_path: str
    deployment_block: int
    contracts: ContractsPublic
    key_manager: KeyManagerPublic | None
    payment_token: PaymentTokenPublic | None = Field(
        description="the ERC-20 every price, fee and payment is in; null when the market is paid in the chain's native currency"
    )
    epsilon_scale: int
    score_scale: int = Field(description="competition scores (and the Ladder's step) on-chain are integers in 1/score_scale metric units")
    delta_scale: int
    max_blob_bytes: int
    dev_accounts: list[DevAccountPublic]
    job_statuses: dict[str, int] = Field(description="IJobMarket.JobStatus: each status as the API names it → its number on chain")
    dataset_statuses: dict[str, int] = Field(description="IDatasetRegistry.DatasetStatus: each status as the API names it → its number")
    roles: dict[str, int] = Field(description="EnclaveRegistry.ROLE_*: each enclave role as the API names it → its number on chain")
    erc20_abi: list[dict[str, Any]] = Field(
        description="the ERC-20 functions the clients call on a payment token (approve, allowance, balanceOf, decimals, symbol)"
    )


class DatasheetSummaryPublic(BaseModel):
    """What a dataset card shows of the provider's datasheet (the whole document: ``GET /api/datasets/{id}``)."""

    title: str
    description: str
    tags: list[str]
    license: str
    provider_name: str
    rows: int = Field(description="the public row count the provider declared")
    label_name: str


class DatasetPublic(BaseModel):
    """Amounts named ``_wei`` are in the market's payment unit: wei, or the token's smallest unit."""

    id: int
    provider: str
    status: DatasetStatusName = Field(description="active: open for new jobs; paused by the provider; delisted for good")
    content_hash: str
    schema_hash: str
    uri: str
    price_wei: str = Field(description="the current price per job; each job pays the price it snapshotted")
    max_epsilon_per_job: float
    total_epsilon: float
    remaining_epsilon: float
    reserved_epsilon: float
    spent_epsilon: float
    max_delta: float
    expiry: int = Field(description="unix seconds after which no job may use the dataset; 0 = never")
    restricted: bool = Field(description="only allowed_consumers may buy")
    allowed_consumers: list[str] = Field(description="the consumer allow-list (it applies while restricted is true)")
    models_restricted: bool = Field(description="only jobs whose model spec hash is in allowed_models may use the dataset")
    allowed_models: list[str] = Field(description="model spec hashes on the allow-list (it applies while models_restricted is true)")
    listed_block: int
    listed_at: int
    listed_tx: str
    updated_block: int = Field(description="block of the last change to the terms, status or restrictions")
    datasheet_hash: str | None = Field(default=None, description="the SHA-256 of the provider's current datasheet (on-chain), if any")
    datasheet: DatasheetSummaryPublic | None = Field(
        default=None, description="the datasheet's summary; null without one, or while this gateway does not hold its document"
    )


class ColumnPublic(BaseModel):
    name: str
    description: str = Field(description="from the datasheet")
    unit: str = Field(description="from the datasheet")
    bounds: list[float] | None = Field(description="the provider's declared [low, high] from the schema (the enclave clips to it), if any")


class TagCountPublic(BaseModel):
    tag: str
    count: int


class TagListPublic(BaseModel):
    tags: list[TagCountPublic] = Field(description="tags of listed datasets, most used first")


class BudgetEventPublic(BaseModel):
    block: int
    timestamp: int
    tx_hash: str
    job_id: int | None
    kind: BudgetKind
    epsilon: float = Field(
        description="listed and terms_updated: the total budget; reserved, released, debited: the job's ε; topped_up: the ε added"
    )
    remaining_epsilon: float
    total_epsilon: float = Field(description="the total budget after this event")
    price_wei: str | None = Field(default=None, description="reserved: the price the job pays for the dataset")


class DatasetDetailPublic(DatasetPublic):
    model_config = ConfigDict(populate_by_name=True)

    schema_: dict[str, Any] | None = Field(default=None, alias="schema", description="the dataset schema JSON, if the blob store has it")
    datasheet: dict[str, Any] | None = Field(  # type: ignore[assignment]  # the detail gives the whole document, not the card's summary
        default=None, description="the whole datasheet document (docs/datasheets.md), if this gateway holds it"
    )
    columns: list[ColumnPublic] = Field(
        default_factory=list, description="each feature: the datasheet's description and unit with the schema's declared bounds"
    )
    budget_history: list[BudgetEventPublic]
    job_ids: list[int]


class DatasetListPublic(BaseModel):
    items: list[DatasetPublic]
    total: int


class JobPublic(BaseModel):
    id: int
    consumer: str
    status: JobStatusName
    dataset_ids: list[int]
    prices_wei: list[str] = Field(description="the price snapshot of each dataset, in dataset_ids order")
    model_spec_hash: str
    epsilon: float
    delta: float
    epsilon_spent: float | None
    escrow_wei: str
    worker_fee_wei: str
    consumer_key: str = Field(description="the consumer's X25519 key the model is sealed to")
    enclave: str | None = Field(description="the holder, the trainer enclave with the claim (a re-claim replaces it; a release clears it)")
    operator: str | None = Field(description="the holder's operator when it claimed the job")
    claim_deadline: int = Field(description="while open, its last claimable second (after a release, the completion deadline); else 0")
    completion_deadline: int
    lease_expiry: int = Field(description="while claimed, the claim lapses after this second unless its operator renews it; 0 otherwise")
    charges: int = Field(description="re-claims after a lapsed lease: each charged every dataset the job's ε once more")
    model_hash: str | None = Field(description="from ResultSubmitted: SHA-256 of the model weights")
    result_hash: str | None = Field(description="from ResultSubmitted: SHA-256 of the sealed model (GET /api/jobs/{id}/result)")
    metrics_hash: str | None
    refund_wei: str | None = Field(description="escrow credited back to the consumer when the job expired or was cancelled")
    created_block: int
    created_at: int


class TimelineEventPublic(BaseModel):
    stage: TimelineStage
    block: int
    timestamp: int
    tx_hash: str
    enclave: str | None = None
    operator: str | None = None
    epsilon_spent: float | None = None
    amount_wei: str | None = Field(default=None, description="escrow (created), refund (expired, cancelled) or stake slashed (slashed)")


class JobPaymentPublic(BaseModel):
    account: str
    amount_wei: str
    reason: PaymentReason


class JobProgressPublic(BaseModel):
    """The worker's status board entry: stage, epoch and ε spent so far (nothing else)."""

    job_id: int
    stage: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    epsilon: float | None = None
    datasets: int | None = None
    epsilon_spent: float | None = None
    updated_at: float | None = None


class JobDetailPublic(JobPublic):
    model_spec: dict[str, Any] | None
    metrics: dict[str, Any] | None = Field(description="the receipt-bound metrics document (DP values only)")
    timeline: list[TimelineEventPublic]
    progress: JobProgressPublic | None
    payments: list[JobPaymentPublic]


class JobListPublic(BaseModel):
    items: list[JobPublic]
    total: int


class AttestationPublic(BaseModel):
    format: str = Field(description="evidence format the verifier checked: sim (development), aws-nitro, or unknown")
    verifier: str | None = Field(description="the verifier that signed the registration certificate")
    verified_at: int = Field(description="time of the block that accepted the certificate")
    certificate_tx: str
    valid_until: int


class WorkerPublic(BaseModel):
    signer: str
    role: RoleName
    measurement: str
    measurement_approved: bool
    operator: str
    encryption_key: str
    valid_until: int
    active: bool = Field(description="measurement approved, enclave not revoked and certificate not expired at the indexed time")
    revoked: bool = Field(description="governance revoked this enclave instance for good")
    revoked_block: int | None
    registered_block: int
    registered_at: int
    attestation: AttestationPublic


class PaymentPublic(BaseModel):
    account: str
    job_id: int | None
    amount_wei: str
    kind: PaymentKind
    reason: PaymentReason | None = Field(
        description="credits: payout (price or worker fee), refund, change from maxTotalPrice, slash (a share of an operator's "
        "slashed stake) or stake (an operator's unbonded stake)"
    )
    block: int
    timestamp: int
    tx_hash: str


class PaymentListPublic(BaseModel):
    items: list[PaymentPublic]
    total: int
    pending_wei: str | None = Field(description="credited minus withdrawn, when an account is given")


class StakePublic(BaseModel):
    """An operator's stake as the index holds it (``JobMarket.stakeOf``)."""

    operator: str
    amount_wei: str
    unbonding_end: int = Field(description="0 while it may claim; else the second its stake can be withdrawn")
    slashed_wei: str = Field(description="all that was slashed from it to providers")
    updated_block: int | None = Field(description="block of the last change (null: never staked)")


class MoneyPublic(BaseModel):
    """The market's money by the indexed events; conserved: balance = pending + locked escrow + total stake."""

    balance_wei: str
    pending_wei: str
    locked_escrow_wei: str
    total_stake_wei: str
    conserved: bool


class StakeListPublic(BaseModel):
    items: list[StakePublic]
    total: int
    money: MoneyPublic


class BlobPublic(BaseModel):
    sha256: str
    size: int
    format: Literal["STRL", "STRS"] = Field(description="STRL encrypted object or STRS sealed envelope")
    kind: Literal["dataset", "model"]


class DocumentPublic(BaseModel):
    """A public JSON document (model spec, dataset schema) stored canonically under its SHA-256."""

    sha256: str


class DepositCreate(BaseModel):
    content_hash: str = Field(pattern=HEX32_PATTERN, description="SHA-256 of the dataset ciphertext")
    wrapped_key: str = Field(pattern=r"^(0x)?([0-9a-fA-F]{2}){1,512}$", description="the data key HPKE-wrapped to the key manager")
    provider: str = Field(pattern=ADDRESS_PATTERN, description="the provider's address: it lists the dataset on-chain")
    signature: str = Field(
        pattern=r"^(0x)?[0-9a-fA-F]{130}$",
        description="the provider's 65-byte EIP-712 Deposit(contentHash, wrappedKeyHash = keccak256(wrappedKey), keyManager) "
        "signature under the job market's domain (name SterlingJobMarket, version 1, chain id, market address)",
    )


class DepositPublic(BaseModel):
    content_hash: str
    key_manager: str
    provider: str
    """The depositing provider (EIP-55): its key is released only for datasets it lists."""


class JsonRpcErrorPublic(BaseModel):
    code: int
    message: str
    data: Any = None


class JsonRpcResponsePublic(BaseModel):
    """One JSON-RPC 2.0 response: ``result`` or ``error``."""

    jsonrpc: Literal["2.0"]
    id: int | str | None
    result: Any = None
    error: JsonRpcErrorPublic | None = None


class ModelPublic(BaseModel):
    """A model listed for serving (``ModelMarket.modelOf``)."""

    model_id: int
    owner: str
    status: Literal["active", "paused", "delisted"]
    weights_hash: str = Field(description="SHA-256 of the plaintext safetensors; every response receipt signs it")
    spec_hash: str
    content_hash: str = Field(description="SHA-256 of the encrypted weights in the blob store")
    price_per_query_wei: str = Field(description="price per row, in the market's payment unit")
    output_policy: Literal["label", "top_k", "probabilities"]
    output_param: int = Field(description="k for top_k, decimals for probabilities")
    query_cap: int = Field(description="rows one client may ever ask (the extraction budget)")
    expiry: int
    restricted: bool = Field(description="only allow-listed clients may buy credit and query")
    source_job_id: int = Field(description="the Sterling job that trained it (0: trained elsewhere)")
    epsilon: float | None = Field(description="the ε it was trained with, if trained here")
    delta_units: str
    serving_enclave: str | None = Field(
        default=None, description="the inference enclave serving it through this gateway; check it in the registry before encrypting to it"
    )


class ChannelPublic(BaseModel):
    """A client's payment channel with one model."""

    model_id: int
    client: str
    deposited_wei: str
    redeemed_wei: str
    redeemed_queries: int
    close_requested_at: int
    balance_wei: str
    enclave: str = Field(description="the inference enclave the channel is bound to (its credit is spent there only)")


class ModelDepositCreate(BaseModel):
    """A model owner's key deposit: the model key HPKE-wrapped to the key manager, with the owner's signature."""

    content_hash: str = Field(pattern=HEX32_PATTERN, description="SHA-256 of the model ciphertext")
    wrapped_key: str = Field(pattern=r"^(0x)?([0-9a-fA-F]{2}){1,512}$", description="the model key HPKE-wrapped to the key manager")
    owner: str = Field(pattern=ADDRESS_PATTERN, description="the owner's address: it lists the model on-chain")
    signature: str = Field(pattern=r"^(0x)?[0-9a-fA-F]{130}$", description="the owner's EIP-712 Deposit under the model market's domain")


class InferencePublic(BaseModel):
    """An answered request: the encrypted response and the enclave's signature of its receipt."""

    request_id: str
    response: str = Field(description="hex of response_nonce || AES-256-GCM(outputs), for the client only")
    receipt_signature: str
    enclave: str
    amount_wei: str = Field(description="the channel total of the voucher served against")
    queries: int


class JobModelCopy(BaseModel):
    """A copy of a job's model from its consumer (who had the model sealed to itself), for serving."""

    content_hash: str = Field(pattern=HEX32_PATTERN, description="SHA-256 of the copy's ciphertext, uploaded to the blob store first")
    wrapped_key: str = Field(pattern=r"^(0x)?([0-9a-fA-F]{2}){1,512}$", description="the copy's key HPKE-wrapped to the key manager")
    signature: str = Field(
        pattern=r"^(0x)?[0-9a-fA-F]{130}$", description="the job's consumer's EIP-712 Deposit under the model market's domain"
    )


class JobModelCreate(BaseModel):
    """Which completed job's model to take for serving: sealed to the key manager by the job (no
    ``copy``), or a ``copy`` from a consumer who had it sealed to itself."""

    job_id: int = Field(ge=1, lt=2**256)
    copy_: JobModelCopy | None = Field(default=None, alias="copy", description="the consumer's copy, if the job sealed the model to it")


class JobModelPublic(BaseModel):
    """A job's model taken for serving: what its consumer passes to ``listModelFromJob``."""

    job_id: int
    content_hash: str = Field(description="SHA-256 of the model ciphertext in the blob store")
    weights_hash: str = Field(description="the receipt's modelHash")
    owner: str = Field(description="the job's consumer, the only account whose listing gets the key")


# --- competitions ------------------------------------------------------------------------------

MetricName = Literal["accuracy", "macro_f1", "roc_auc", "log_loss", "rmse"]
CompetitionPhase = Literal["upcoming", "submissions", "scoring", "closable", "closed"]
WRAPPED_KEY_PATTERN = r"^(0x)?([0-9a-fA-F]{2}){1,512}$"
SIGNATURE_PATTERN = r"^(0x)?[0-9a-fA-F]{130}$"


class CompetitionPublic(BaseModel):
    """A competition (``CompetitionMarket.competitionOf``). Scores are metric values (the chain's 10⁻⁶ units / 1e6)."""

    competition_id: int
    organizer: str
    status: Literal["open", "closed"]
    phase: CompetitionPhase = Field(
        description="upcoming: before the window; submissions: window open; scoring: private scores being posted; "
        "closable: anyone may close; closed: final"
    )
    test_set_hash: str
    schema_hash: str = Field(description="SHA-256 of the canonical schema every submission must take (GET /api/documents/{hash})")
    rules_hash: str = Field(description="SHA-256 of the rules document in the blob store")
    prize_wei: str
    metric: MetricName
    higher_is_better: bool
    public_split_bps: int
    ladder_step: float = Field(description="the Ladder's step η: the public leaderboard moves only for a gain above it")
    opens_at: int
    closes_at: int
    open_to_all_at: int = Field(description="from this second on anyone may close (an organizer who never closes keeps nothing)")
    submission_cap: int
    max_parameters: int
    architectures: list[Literal["logistic_regression", "mlp", "cnn"]]
    purchase_policy: Literal["none", "organizer", "anyone"]
    submission_count: int
    next_public: int
    private_scored: int
    public_best: float | None
    leader: int | None = Field(description="the index of the best private score so far (the winner once closed)")


class SubmissionPublic(BaseModel):
    index: int
    participant: str
    content_hash: str
    weights_hash: str = Field(description="SHA-256 of the plaintext safetensors the key manager admitted (from its Submitted log)")
    ask_price_wei: str = Field(description="what a buyer pays after the close; 0: not for sale")
    submitted_at: int
    public_score: float | None = Field(description="the Ladder's leaderboard value when it was scored")
    private_score: float | None


class ScorePointPublic(BaseModel):
    """One posted score, for the leaderboard chart over time."""

    index: int
    split: Literal["public", "private"]
    score: float
    block: int
    time: int


class CompetitionDetailPublic(CompetitionPublic):
    rules: dict[str, Any] | None = Field(description="the rules document (None if the gateway does not hold it)")
    submissions: list[SubmissionPublic]
    history: list[ScorePointPublic]


class TestSetDepositCreate(BaseModel):
    """An organizer's test-set key deposit: the key HPKE-wrapped to the key manager, with the organizer's signature."""

    content_hash: str = Field(pattern=HEX32_PATTERN, description="SHA-256 of the test set ciphertext, uploaded first")
    wrapped_key: str = Field(pattern=WRAPPED_KEY_PATTERN)
    organizer: str = Field(pattern=ADDRESS_PATTERN)
    signature: str = Field(pattern=SIGNATURE_PATTERN, description="the organizer's EIP-712 Deposit under the competition market's domain")


class TestSetDepositPublic(BaseModel):
    content_hash: str
    schema_hash: str
    rows: int
    key_manager: str


class AdmissionCreate(BaseModel):
    """A participant's sealed model, for the key manager to check against the rules and admit."""

    competition_id: int = Field(ge=1, lt=2**256)
    content_hash: str = Field(pattern=HEX32_PATTERN, description="SHA-256 of the model ciphertext, uploaded first")
    wrapped_key: str = Field(pattern=WRAPPED_KEY_PATTERN, description="the model key wrapped with the submission binding")
    participant: str = Field(pattern=ADDRESS_PATTERN)
    signature: str = Field(pattern=SIGNATURE_PATTERN, description="the participant's EIP-712 Deposit under the competition market's domain")


class JobAdmissionCreate(BaseModel):
    """A completed job's model, sealed to the key manager, to admit as its consumer's entry."""

    competition_id: int = Field(ge=1, lt=2**256)
    job_id: int = Field(ge=1, lt=2**256)


class AdmissionPublic(BaseModel):
    """What ``CompetitionMarket.submit`` takes from the participant."""

    competition_id: int
    participant: str
    content_hash: str
    weights_hash: str
    admission: str = Field(description="the key manager's EIP-712 Admission signature")
    key_manager: str


class PurchaseKeyCreate(BaseModel):
    competition_id: int = Field(ge=1, lt=2**256)
    index: int = Field(ge=0, lt=2**32)
    buyer: str = Field(pattern=ADDRESS_PATTERN)


class PurchaseKeyPublic(BaseModel):
    """A bought model's key, wrapped to the X25519 key its buyer gave on-chain (only the buyer opens it)."""

    competition_id: int
    index: int
    buyer: str
    content_hash: str = Field(description="the model ciphertext to fetch from the blob store")
    weights_hash: str = Field(description="the SHA-256 the decrypted safetensors must have")
    released_key: str
