// The browser's copy of enclave_worker/trusted/errors.py: same names, same hierarchy, so a page
// can tell a tampered download from a wrong key, and tests can compare with the Python side.

/** Root of every error the Sterling browser code raises on purpose. */
export class SterlingError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** A Sterling ciphertext could not be decrypted; the subclass says why. */
export class CiphertextError extends SterlingError {}

/** Not a Sterling ciphertext of the expected kind (bad magic, version, header, kind, context). */
export class CiphertextMalformed extends CiphertextError {}

/** A chunk failed authentication: flipped bits, a wrong key, or a cut inside a chunk. */
export class CiphertextTampered extends CiphertextError {}

/** A chunk authenticates, but at another position than the one it was found at. */
export class CiphertextReordered extends CiphertextTampered {}

/** A chunk is a copy of an earlier chunk of the same object. */
export class CiphertextDuplicated extends CiphertextTampered {}

/** The stream ended before its final chunk. */
export class CiphertextTruncated extends CiphertextError {}

/** Bytes follow the final chunk. */
export class CiphertextTrailingData extends CiphertextError {}

/** An HPKE-wrapped key did not open with this key and binding (wrong recipient or context). */
export class KeyUnwrapFailed extends SterlingError {}

/** A dataset package is malformed or does not match its schema. */
export class InvalidDataset extends SterlingError {}

/** A CSV file cannot be turned into a dataset package; the message names the row and column. */
export class InvalidCsv extends InvalidDataset {}

/** A request envelope or a response's outputs are not in Sterling's format (as trusted/errors.py). */
export class EnvelopeMalformed extends SterlingError {}

/** An inference answer failed verification: its receipt is not signed by the enclave the request
 * was encrypted to, over this request, response, model and voucher; or it does not decrypt
 * (marketplace/errors.py `ResponseRejected`). */
export class ResponseRejected extends SterlingError {}
