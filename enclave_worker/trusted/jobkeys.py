"""Per-job keys: one claim, one key, one run (``docs/jobs.md``, property 1).

A trainer enclave creates a fresh X25519 key pair for each job it is asked to prepare and signs
its public half with the enclave's registered signer, bound to chain id, market and job id. The
key manager wraps data keys only to such a certified per-job key of the enclave the chain shows
holding the job. The trainer uses the private half for exactly one run and then forgets it; it
never prepares a job twice. A second run of the same job therefore needs a new claim by a new
enclave instance (a restarted enclave has a new signer), which the chain accounts for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address

from . import keywrap
from .errors import KeyReleaseRefused, RunRefused

JOB_KEY_DOMAIN = b"sterling/v1/job-key"

JobRef = tuple[int, bytes, int]
"""(chain id, market address, job id)."""


def job_key_digest(chain_id: int, market: bytes, job_id: int, job_key: bytes) -> bytes:
    """The 32 bytes a trainer signs to certify ``job_key`` as its key for one job."""
    if len(market) != 20 or len(job_key) != 32:
        raise ValueError("market must be 20 bytes and the job key 32 bytes")
    return keccak(JOB_KEY_DOMAIN + chain_id.to_bytes(32, "big") + market + job_id.to_bytes(32, "big") + job_key)


def sign_job_key(account: LocalAccount, chain_id: int, market: bytes, job_id: int, job_key: bytes) -> bytes:
    """EIP-191 signature of :func:`job_key_digest` (65 bytes)."""
    message = encode_defunct(primitive=job_key_digest(chain_id, market, job_id, job_key))
    return bytes(account.sign_message(message).signature)


def check_job_key(*, chain_id: int, market: bytes, job_id: int, job_key: bytes, signature: bytes, enclave: bytes) -> None:
    """Check that ``enclave`` (20-byte signer) certified ``job_key`` for this job.

    Raises:
        KeyReleaseRefused: the signature is malformed or by another signer.
    """
    message = encode_defunct(primitive=job_key_digest(chain_id, market, job_id, job_key))
    try:
        signer = to_canonical_address(Account.recover_message(message, signature=signature))
    except Exception as e:  # malformed signature: any parse error means "not certified"
        raise KeyReleaseRefused(f"the per-job key of job {job_id} carries an invalid signature") from e
    if signer != enclave:
        raise KeyReleaseRefused(f"the per-job key of job {job_id} is not certified by the enclave holding the job")


@dataclass
class JobKeyRing:
    """A trainer enclave's per-job keys: each is created once, used by one run, then forgotten."""

    _keys: dict[JobRef, X25519PrivateKey] = field(default_factory=dict)
    _prepared: set[JobRef] = field(default_factory=set)
    _produced: set[JobRef] = field(default_factory=set)  # runs that handed a result out of the enclave
    _abandoned: set[JobRef] = field(default_factory=set)

    def prepare(self, job: JobRef) -> bytes:
        """Create the job's key pair; returns the public key.

        Raises:
            RunRefused: this enclave prepared the job before (one claim, one key, one run).
        """
        if job in self._prepared:
            raise RunRefused(f"job {job[2]} was already prepared by this enclave: one claim, one key, one run")
        self._prepared.add(job)
        key = X25519PrivateKey.generate()
        self._keys[job] = key
        return keywrap.public_key_bytes(key)

    def take(self, job: JobRef) -> X25519PrivateKey:
        """Hand out the job's private key for its one run and forget it.

        Raises:
            RunRefused: the job was never prepared here, or its run already took the key.
        """
        key = self._keys.pop(job, None)
        if key is not None:
            return key
        if job in self._abandoned:
            raise RunRefused(f"job {job[2]} was abandoned by this enclave: it never runs here")
        if job in self._prepared:
            raise RunRefused(f"job {job[2]} already ran in this enclave: one claim, one key, one run")
        raise RunRefused(f"job {job[2]} was not prepared by this enclave: prepare_job first")

    def produced(self, job: JobRef) -> None:
        """Record that the job's run is handing its result out of the enclave: it can no longer be abandoned."""
        self._produced.add(job)

    def abandon(self, job: JobRef) -> None:
        """Forget the job's key if its run has not taken it, so the job never runs here; allowed
        only if this enclave prepared the job and no run of it produced a result.

        Raises:
            RunRefused: the job was never prepared here, or its run produced a result.
        """
        if job not in self._prepared:
            raise RunRefused(f"job {job[2]} was not prepared by this enclave: nothing to abandon")
        if job in self._produced:
            raise RunRefused(f"job {job[2]} produced a result in this enclave: it cannot be abandoned")
        self._keys.pop(job, None)
        self._abandoned.add(job)
