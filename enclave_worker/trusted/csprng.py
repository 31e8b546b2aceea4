"""Cryptographically secure randomness for DP-SGD: a ChaCha20 keystream turned into uniforms,
Gaussian noise and geometric gaps for torch.

DP-SGD's guarantee assumes that nobody can predict its noise or its Poisson samples. torch's
default generator is a Mersenne Twister, whose whole state follows from 624 consecutive outputs;
this stream is ChaCha20 (RFC 8439, OpenSSL's implementation through ``cryptography``) instead.

Key and nonces:
    * the key is 256 bits from :mod:`secrets` (:meth:`ChaCha20Generator.from_entropy`), fresh for
      every job; tests and benchmarks may derive it from an integer seed instead
      (:meth:`ChaCha20Generator.from_seed`: HKDF-SHA256, RFC 5869, salt :data:`SEED_KDF_SALT`,
      info :data:`SEED_KDF_INFO`), which the enclave never does;
    * one key serves several independent streams (:meth:`ChaCha20Generator.substream`); each stream
      is cut into segments of :data:`SEGMENT_BYTES`, and segment ``k`` of stream ``s`` is the
      keystream under the 96-bit nonce ``s (4 bytes) ‖ k (8 bytes)`` from block counter 0. A
      segment is 2^24 blocks, far from the 32-bit block counter's end, so no (key, nonce, counter)
      is ever used twice and the counter never carries into the nonce.

Numbers (formed in numpy, whose float32 log/sin/cos run about twice as fast here as torch's, on
the calling thread only, then handed to torch without a copy):
    * uniforms in the open interval (0, 1) (:func:`open_unit_interval`): 52 keystream bits ``k``
      give ``(2k + 1) · 2^-53`` in float64, 23 bits give ``(2k + 1) · 2^-24`` in float32, formed
      exactly, never 0 or 1, so a logarithm never meets 0;
    * Gaussian noise (:meth:`ChaCha20Generator.gaussian`) by Box–Muller in the parameters' dtype,
      both outputs of each pair used, with the floating-point defence below;
    * geometric gaps (:meth:`ChaCha20Generator.geometric`) by inversion, ``⌈log u / log(1 - p)⌉``,
      from float64 uniforms: always ≥ 1.

Floating-point attacks (Mironov, CCS 2012, on Laplace; Jin et al., IEEE S&P 2022, on the Gaussian
samplers of DP libraries, Opacus's among them): a noisy value computed in floating point can reveal
which noise value, and so which input, produced it, because a sampler's outputs form a sparse set
of floats that can be searched and inverted. The noise follows Holohan & Braghin ("Secure Random
Sampling in Differential Privacy", ESORICS 2021, §5.1), as Opacus's ``secure_mode`` does: each value
is ``σ/2`` times the sum of :data:`NOISE_SUMMANDS` = 4 independent standard normals, so that
inverting one value means searching the inputs of several Box–Muller pairs at once (about
``2^(p(k−1))`` work for ``k`` summands of ``p`` bits each: 2^159 for Opacus's doubles). The summands
come from distinct pairs: the two outputs of one pair share their inputs, and their sum is one
normal in disguise (``r cos θ + r sin θ = √2 r cos(θ − π/4)``). Unlike Opacus, whose float32
normals come from 24-bit uniforms (radius at most 5.8), each radius uniform here has 63-bit
resolution near 0 (radius at most 9.35; the tail beyond has probability ``2^-63`` per pair). The
defence makes the search infeasible; it is not an exact sampler (a discrete Gaussian would be), and
it does nothing against timing side channels — hence every draw is vectorised, its running time a
function of the number of values only.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import numpy.typing as npt
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
SEGMENT_BYTES = 1 << 30
"""Keystream bytes per (key, nonce): 2^24 ChaCha20 blocks, then the next nonce of the stream."""
PIECE_BYTES = 1 << 20
"""Keystream bytes produced per call into OpenSSL (the length of the zero buffer it encrypts)."""
GAUSSIAN_PIECE = 1 << 15
"""Noise values formed at once by :meth:`ChaCha20Generator.gaussian` (about 2 MiB of temporaries
in float32); a longer draw is formed piece by piece."""
NOISE_SUMMANDS = 4
"""Independent standard normals summed per noise value: Holohan & Braghin's ``2n`` with Opacus's
``n = 2``. Each costs about as much as torch's whole Mersenne Twister normal (docs/models.md)."""
SEED_KDF_SALT = b"sterling/dp-sgd/test-seed"
SEED_KDF_INFO = b"chacha20 key v1"

_ZEROS = memoryview(bytes(PIECE_BYTES))
_MANTISSA_64, _ONE_64 = (1 << 52) - 1, 0x3FF0000000000000
_MANTISSA_32, _ONE_32 = (1 << 23) - 1, 0x3F800000
_LOW_63 = (1 << 63) - 1
_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]


def open_unit_interval(bits: npt.NDArray[np.uint64] | npt.NDArray[np.uint32]) -> FloatArray:
    """Random bits to uniforms in the open interval (0, 1), in place.

    uint64 bits become float64 ``(2k + 1) · 2^-53`` from their low 52 bits ``k``; uint32 bits
    become float32 ``(2k + 1) · 2^-24`` from their low 23 bits. Both are exact: the bits become
    the mantissa of a number in [1, 2), from which ``1 - 2^-53`` (``1 - 2^-24``) is subtracted
    without rounding (Sterbenz). The values are symmetric about 1/2 and never 0 or 1.

    Returns:
        A float view of ``bits``' memory.
    """
    if bits.dtype == np.uint64:
        bits &= np.uint64(_MANTISSA_64)
        bits |= np.uint64(_ONE_64)
        wide = bits.view(np.float64)
        wide -= 1.0 - 2.0**-53
        return wide
    if bits.dtype == np.uint32:
        bits &= np.uint32(_MANTISSA_32)
        bits |= np.uint32(_ONE_32)
        narrow = bits.view(np.float32)
        narrow -= np.float32(1.0 - 2.0**-24)
        return narrow
    raise TypeError(f"random bits come as uint64 or uint32, got {bits.dtype}")


def radius_uniform(bits: npt.NDArray[np.int64], dtype: torch.dtype) -> FloatArray:
    """Random int64 bits to uniforms in (0, 1] of 63-bit resolution: ``(2k + 1) · 2^-63`` from the
    low 63 bits (the lowest forced to 1), rounded to ``dtype``. Modifies ``bits``.

    The smallest value is 2^-63, so a Box–Muller radius ``√(−2 ln u)`` is at most 9.35 and the
    tail it cannot reach has probability 2^-63; a value may round up to exactly 1 (radius 0)."""
    bits &= _LOW_63
    bits |= 1
    u = bits.astype(_NUMPY_DTYPE[dtype])
    u *= 2.0**-63
    return u


def box_muller(u1: FloatArray, u2: FloatArray, out: FloatArray) -> None:
    """Independent standard normals by Box–Muller: ``out[0] = r cos θ`` and ``out[1] = r sin θ``
    with ``r = √(−2 ln u1)``, ``θ = 2π u2``, from uniforms ``u1`` in (0, 1] and ``u2`` in (0, 1)
    (``out`` of shape ``(2, *u1.shape)``); overwrites ``u1`` and ``u2``."""
    radius = np.log(u1, out=u1)
    radius *= -2.0
    np.sqrt(radius, out=radius)
    angle = u2
    angle *= 2.0 * math.pi
    sine = np.sin(angle, out=out[1])
    sine *= radius
    cosine = np.cos(angle, out=out[0])
    cosine *= radius


class ChaCha20Generator:
    """A ChaCha20 keystream with the draws DP-SGD needs (see the module docstring).

    Not thread-safe: one generator per consumer (:meth:`substream` gives independent ones).

    Example:
        >>> rng = ChaCha20Generator.from_entropy()
        >>> noise = rng.gaussian(1000, std=2.0)  # N(0, 4), hardened against floating-point attacks
        >>> gaps = rng.geometric((10,), 0.01)
    """

    def __init__(self, key: bytes, *, stream: int = 0) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a ChaCha20 key is {KEY_BYTES} bytes, got {len(key)}")
        if not 0 <= stream < 1 << 32:
            raise ValueError(f"stream ids are 32-bit, got {stream}")
        self._key = bytes(key)
        self.stream = stream
        self._segment = -1
        self._left = 0
        self._encryptor: CipherContext | None = None

    @classmethod
    def from_entropy(cls) -> ChaCha20Generator:
        """A generator with a fresh 256-bit key from the OS (:mod:`secrets`): the enclave's only kind."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_seed(cls, seed: int) -> ChaCha20Generator:
        """A reproducible generator for tests and benchmarks only: key = HKDF-SHA256(input key
        material = ``seed`` as signed big-endian bytes, salt :data:`SEED_KDF_SALT`, info
        :data:`SEED_KDF_INFO`)."""
        material = seed.to_bytes(seed.bit_length() // 8 + 1, "big", signed=True)
        kdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=SEED_KDF_SALT, info=SEED_KDF_INFO)
        return cls(kdf.derive(material))

    def __repr__(self) -> str:
        return f"ChaCha20Generator(stream={self.stream})"  # never the key

    def substream(self, stream: int) -> ChaCha20Generator:
        """An independent stream under the same key (another nonce prefix), from its start."""
        return ChaCha20Generator(self._key, stream=stream)

    def random_bytes(self, n: int) -> bytes:
        """The next ``n`` keystream bytes."""
        out = np.empty(n, dtype=np.uint8)
        self._fill(out)
        return out.tobytes()

    def _fill(self, out: npt.NDArray[np.generic]) -> None:
        """Overwrite a C-contiguous array with the next ``out.nbytes`` keystream bytes."""
        buffer = out.data.cast("B")
        done = 0
        while done < len(buffer):
            if self._left == 0:
                self._next_segment()
            assert self._encryptor is not None
            take = min(len(buffer) - done, PIECE_BYTES, self._left)
            self._encryptor.update_into(_ZEROS[:take], buffer[done : done + take])
            done += take
            self._left -= take

    def _next_segment(self) -> None:
        self._segment += 1
        nonce = bytes(4) + self.stream.to_bytes(4, "big") + self._segment.to_bytes(8, "big")
        self._encryptor = Cipher(algorithms.ChaCha20(self._key, nonce), mode=None).encryptor()
        self._left = SEGMENT_BYTES

    def uniform(self, n: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``n`` uniforms in the open interval (0, 1) (:func:`open_unit_interval`)."""
        bits = {torch.float64: np.uint64, torch.float32: np.uint32}.get(dtype)
        if bits is None:
            raise TypeError(f"uniforms come as float64 or float32, got {dtype}")
        raw = np.empty(n, dtype=bits)
        self._fill(raw)
        return torch.from_numpy(open_unit_interval(raw))

    def gaussian(self, n: int, *, std: float, dtype: torch.dtype = torch.float32, summands: int | None = None) -> torch.Tensor:
        """``n`` independent N(0, std²) values, hardened against floating-point attacks.

        The values are ``std / √k`` times the sum of ``k`` independent standard-normal vectors,
        each from its own Box–Muller pairs (Holohan & Braghin 2021; Opacus ``secure_mode``),
        computed in ``dtype`` (float32 or float64), :data:`GAUSSIAN_PIECE` values at a time. A
        pair's radius uniform is :func:`radius_uniform`, its angle uniform :func:`open_unit_interval`.

        Args:
            summands: ``k``; :data:`NOISE_SUMMANDS` unless given (the engine never gives it; the
                benchmark compares counts).
        """
        if dtype not in _NUMPY_DTYPE:
            raise TypeError(f"noise comes as float32 or float64, got {dtype}")
        k = NOISE_SUMMANDS if summands is None else summands
        if k < 1:
            raise ValueError(f"at least one summand, got {k}")
        out = torch.empty(n, dtype=dtype)
        flat = out.numpy()
        for start in range(0, n, GAUSSIAN_PIECE):
            part = flat[start : start + GAUSSIAN_PIECE]
            np.multiply(self._summed_normals(len(part), k, dtype), std / math.sqrt(k), out=part)
        return out

    def _summed_normals(self, n: int, k: int, dtype: torch.dtype) -> FloatArray:
        """``n`` sums of ``k`` standard normals, one from each of ``k`` independent Box–Muller draws.

        Draw ``i`` has ``m = ⌈n / 2⌉`` pairs; value ``j < m`` takes the cosine output of the draw's
        pair ``j`` and value ``m + j`` its sine output. So every value sums normals of ``k``
        distinct pairs, never both outputs of one pair, and every normal is used at most once.
        The cosines and sines are laid out ``(2, k, m)``: each ufunc writes contiguous memory
        (numpy's vectorised sin/cos are several times slower into strided outputs).
        """
        m = (n + 1) // 2
        pairs = k * m
        narrow = dtype == torch.float32
        raw = np.empty(pairs * (12 if narrow else 16), dtype=np.uint8)
        self._fill(raw)
        u1 = radius_uniform(raw[: 8 * pairs].view(np.int64), dtype)
        angle = raw[8 * pairs :]
        u2 = open_unit_interval(angle.view(np.uint32) if narrow else angle.view(np.uint64))
        normals = np.empty((2, k, m), dtype=u1.dtype)
        box_muller(u1.reshape(k, m), u2.reshape(k, m), normals)
        sums: FloatArray = np.add.reduce(normals, axis=1)
        return sums.reshape(-1)[:n]

    def geometric(self, shape: tuple[int, ...], p: float) -> torch.Tensor:
        """Independent geometric draws of success probability ``p``: the number of trials up to and
        including the first success (so ≥ 1), as float64 like ``torch.Tensor.geometric_``."""
        if not 0 < p <= 1:
            raise ValueError(f"success probability must be in (0, 1], got {p}")
        raw = np.empty(math.prod(shape), dtype=np.uint64)
        self._fill(raw)
        u = open_unit_interval(raw)
        if p == 1:
            u.fill(1.0)
        else:
            # log u < 0 for every u in (0, 1), and log(1 - p) < 0: the ratio is positive, its ceiling ≥ 1.
            np.log(u, out=u)
            u /= math.log1p(-p)
            np.ceil(u, out=u)
        return torch.from_numpy(u).view(shape)
