// The canonical dataset package (docs/formats.md, enclave_worker/trusted/dataset.py), byte for byte
// what Python's DatasetPackage.to_bytes() writes for the same data:
//
//   uint64 LE header length ‖ header JSON padded with spaces to a multiple of 8 ‖ labels ‖ features
//
// The header is written the way the Python `safetensors` library writes it: `__metadata__` first,
// then the tensors ordered by dtype alignment (I64 before F32), offsets into the data section.

import { sha256 } from "./bytes.js";
import { InvalidDataset } from "./errors.js";

export const SCHEMA_VERSION = 1;
/** Largest safetensors header accepted when reading a package (as in dataset.py). */
export const MAX_HEADER_BYTES = 1 << 20;

/**
 * The schema document exactly as it is hashed and stored (snake_case, as in docs/formats.md).
 * @typedef {object} Schema
 * @property {number} version           1
 * @property {string} task              "classification"
 * @property {string[]} feature_names
 * @property {number[]} feature_shape   e.g. [30]
 * @property {string[]} class_names     at least two; label i means class_names[i]
 * @property {([number, number] | null)[]} [feature_bounds]  the provider's declared [lo, hi] per
 *   flattened feature (null: none), present only when at least one is declared; never computed from the rows
 */

/** Every declared bound is below this in magnitude (dataset.py BOUND_LIMIT). */
export const BOUND_LIMIT = 1e15;
/** A non-integral bound is at least this in magnitude (dataset.py SMALLEST_FRACTION): Python and
 * JavaScript both print it in plain decimal notation. */
export const SMALLEST_FRACTION = 1e-4;

/**
 * @typedef {object} DatasetArrays
 * @property {Float32Array} features   row-major, rows × product(feature_shape)
 * @property {BigInt64Array} labels    one class index per row
 * @property {Schema} schema
 */

/**
 * Python's `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`:
 * keys sorted by code point, no whitespace, everything outside printable ASCII as `\uXXXX`.
 * Numbers are safe integers, or non-integral numbers with SMALLEST_FRACTION <= |x| < BOUND_LIMIT:
 * in that range both languages print the same shortest round-trip decimal (elsewhere they
 * differ: exponents, "1.0" against "1").
 * @param {unknown} value
 * @returns {string}
 */
export function canonicalJson(value) {
  if (value === null || typeof value === "boolean") return String(value);
  if (typeof value === "number") {
    if (Number.isSafeInteger(value)) return String(value); // -0 prints as 0, as Python's int does
    if (!Number.isFinite(value) || Number.isInteger(value) || Math.abs(value) < SMALLEST_FRACTION || Math.abs(value) >= BOUND_LIMIT) {
      throw new TypeError(`canonical JSON holds safe integers and fractions of magnitude in [1e-4, 1e15) only, got ${value}`);
    }
    return String(value);
  }
  if (typeof value === "string") {
    return JSON.stringify(value).replace(/[^\x20-\x7e]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort(compareCodePoints);
    return "{" + keys.map((k) => canonicalJson(k) + ":" + canonicalJson(value[k])).join(",") + "}";
  }
  throw new TypeError(`cannot put a ${typeof value} in canonical JSON`);
}

/**
 * Order strings as Python's `sorted()` does: by Unicode code point (not UTF-16 code unit).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareCodePoints(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/**
 * One declared bound as dataset.py's _bound_value normalises it.
 * @param {unknown} value
 * @param {string} where  e.g. 'the lower bound of feature 0 ("age")'
 * @returns {number}
 * @throws {InvalidDataset}
 */
function boundValue(value, where) {
  if (typeof value !== "number") throw new InvalidDataset(`${where} is ${JSON.stringify(value)}, not a number`);
  if (!Number.isFinite(value)) throw new InvalidDataset(`${where} is ${value}, not a finite number`);
  if (Math.abs(value) >= BOUND_LIMIT) throw new InvalidDataset(`${where} is ${value}, its magnitude must be below 1e15`);
  if (Number.isInteger(value)) return value === 0 ? 0 : value; // -0 -> 0
  if (Math.abs(value) < SMALLEST_FRACTION) {
    throw new InvalidDataset(`${where} is ${value}, a non-integral bound must be at least 1e-4 in magnitude`);
  }
  return value;
}

/**
 * Check declared feature bounds as dataset.py's normalise_feature_bounds does: undefined/null
 * stays null; else one entry per flattened feature, each null or [lo, hi] with lo < hi, at least
 * one declared.
 * @param {unknown} bounds
 * @param {{featureNames: string[], featureShape: number[]}} schema
 * @returns {([number, number] | null)[] | null}
 * @throws {InvalidDataset}  naming the feature and the problem
 */
export function normaliseFeatureBounds(bounds, { featureNames, featureShape }) {
  if (bounds === undefined || bounds === null) return null;
  if (!Array.isArray(bounds)) throw new InvalidDataset("feature_bounds must be a list with one [lo, hi] or null per feature");
  const width = featureShape.reduce((a, b) => a * b, 1);
  if (bounds.length !== width) throw new InvalidDataset(`feature_bounds has ${bounds.length} entries, the schema has ${width} features`);
  const out = bounds.map((entry, i) => {
    const name = i < featureNames.length ? `feature ${i} (${JSON.stringify(featureNames[i])})` : `feature ${i}`;
    if (entry === null) return null;
    if (!Array.isArray(entry) || entry.length !== 2) throw new InvalidDataset(`feature_bounds of ${name} must be [lo, hi] or null`);
    const lo = boundValue(entry[0], `the lower bound of ${name}`);
    const hi = boundValue(entry[1], `the upper bound of ${name}`);
    if (!(lo < hi)) throw new InvalidDataset(`feature_bounds of ${name}: the lower bound ${lo} is not below the upper bound ${hi}`);
    return [lo, hi];
  });
  if (out.every((e) => e === null)) throw new InvalidDataset("feature_bounds declares no bound: leave it out instead of listing only nulls");
  return out;
}

/**
 * Check a schema as Python's Schema.from_json does and return it with exactly its fields
 * (feature_bounds only when declared, so a schema without them keeps its hash).
 * @param {Schema} schema
 * @returns {Schema}
 * @throws {InvalidDataset}
 */
export function checkSchema(schema) {
  if (schema?.version !== SCHEMA_VERSION) throw new InvalidDataset(`unsupported schema version ${schema?.version}`);
  if (schema.task !== "classification") {
    throw new InvalidDataset(`unsupported task ${JSON.stringify(schema.task)} (supported: classification)`);
  }
  const strings = (list) => Array.isArray(list) && list.every((s) => typeof s === "string");
  if (!strings(schema.feature_names) || !strings(schema.class_names)) {
    throw new InvalidDataset("feature_names and class_names must be lists of strings");
  }
  if (schema.class_names.length < 2) throw new InvalidDataset("a classification schema needs at least two classes");
  const shape = schema.feature_shape;
  if (!Array.isArray(shape) || !shape.length || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new InvalidDataset(`invalid feature shape ${JSON.stringify(shape)}`);
  }
  const checked = {
    version: SCHEMA_VERSION,
    task: schema.task,
    feature_names: [...schema.feature_names],
    feature_shape: [...shape],
    class_names: [...schema.class_names],
  };
  const bounds = normaliseFeatureBounds(schema.feature_bounds, { featureNames: checked.feature_names, featureShape: checked.feature_shape });
  if (bounds) checked.feature_bounds = bounds;
  return checked;
}

/**
 * The canonical schema JSON bytes (stored in the blob store under their hash).
 * @param {Schema} schema
 * @returns {Uint8Array}
 */
export function schemaBytes(schema) {
  return new TextEncoder().encode(canonicalJson(checkSchema(schema)));
}

/**
 * The on-chain `schemaHash`: SHA-256 of the canonical schema JSON.
 * @param {Schema} schema
 * @returns {Promise<Uint8Array>}
 */
export async function schemaHash(schema) {
  return sha256(schemaBytes(schema));
}

/**
 * Serialise a dataset as the canonical safetensors package, checking it as DatasetPackage does.
 * @param {DatasetArrays} dataset
 * @returns {Uint8Array}
 * @throws {InvalidDataset}
 */
export function buildPackage({ features, labels, schema }) {
  const checked = checkSchema(schema);
  if (!(features instanceof Float32Array)) throw new InvalidDataset("features must be a Float32Array");
  if (!(labels instanceof BigInt64Array)) throw new InvalidDataset("labels must be a BigInt64Array");
  const rows = labels.length;
  const width = checked.feature_shape.reduce((a, b) => a * b, 1);
  if (rows === 0) throw new InvalidDataset("dataset has no rows");
  if (features.length !== rows * width) {
    throw new InvalidDataset(`${features.length} feature values for ${rows} rows of shape [${checked.feature_shape}]`);
  }
  const classes = BigInt(checked.class_names.length);
  if (labels.some((l) => l < 0n || l >= classes)) throw new InvalidDataset(`labels outside [0, ${classes})`);
  if (!features.every(Number.isFinite)) throw new InvalidDataset("features contain NaN or infinity");
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new InvalidDataset("big-endian hosts are not supported");

  const header = {
    __metadata__: { sterling_schema: canonicalJson(checked) },
    labels: { dtype: "I64", shape: [rows], data_offsets: [0, labels.byteLength] },
    features: {
      dtype: "F32",
      shape: [rows, ...checked.feature_shape],
      data_offsets: [labels.byteLength, labels.byteLength + features.byteLength],
    },
  };
  let json = JSON.stringify(header); // insertion order, as safetensors writes it
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json); // ASCII: the schema is already escaped
  const out = new Uint8Array(8 + headerBytes.length + labels.byteLength + features.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength), 8 + headerBytes.length);
  out.set(new Uint8Array(features.buffer, features.byteOffset, features.byteLength), 8 + headerBytes.length + labels.byteLength);
  return out;
}

/**
 * Check a package file without holding it in memory (header, label range, finite features, one
 * slice at a time) and return its schema, as DatasetPackage.from_bytes would accept it.
 * @param {Blob} blob
 * @returns {Promise<{schema: Schema, rows: number}>}
 * @throws {InvalidDataset}
 */
export async function inspectPackage(blob) {
  if (blob.size < 8) throw new InvalidDataset("dataset package is too short to be safetensors");
  const headerLen = Number(new DataView(await blob.slice(0, 8).arrayBuffer()).getBigUint64(0, true));
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > blob.size) {
    throw new InvalidDataset("dataset package has an invalid safetensors header length");
  }
  let header;
  try {
    header = JSON.parse(await blob.slice(8, 8 + headerLen).text());
  } catch (e) {
    throw new InvalidDataset(`dataset package header is not JSON: ${e.message}`);
  }
  let schema;
  try {
    schema = checkSchema(JSON.parse(header?.__metadata__?.sterling_schema));
  } catch (e) {
    throw new InvalidDataset(`dataset package has no valid sterling_schema metadata: ${e.message}`);
  }
  const names = Object.keys(header).filter((k) => k !== "__metadata__").sort();
  if (names.join() !== "features,labels") {
    throw new InvalidDataset(`dataset package must hold exactly features and labels, found ${JSON.stringify(names)}`);
  }
  const { features, labels } = header;
  if (labels.dtype !== "I64" || labels.shape?.length !== 1) throw new InvalidDataset("labels must be a 1-D int64 array");
  if (features.dtype !== "F32") throw new InvalidDataset(`features must be float32, got ${features.dtype}`);
  const rows = labels.shape[0];
  if (!Number.isSafeInteger(rows) || rows <= 0) throw new InvalidDataset("dataset has no rows");
  if (features.shape?.[0] !== rows) throw new InvalidDataset(`${features.shape?.[0]} feature rows but ${rows} labels`);
  if (features.shape.slice(1).join() !== schema.feature_shape.join()) {
    throw new InvalidDataset(`feature shape [${features.shape.slice(1)}] does not match schema [${schema.feature_shape}]`);
  }
  const width = schema.feature_shape.reduce((a, b) => a * b, 1);
  const dataStart = 8 + headerLen;
  const spans = [
    [labels.data_offsets, rows * 8],
    [features.data_offsets, rows * width * 4],
  ].sort((a, b) => a[0]?.[0] - b[0]?.[0]);
  let expected = 0;
  for (const [offsets, size] of spans) {
    if (offsets?.[0] !== expected || offsets[1] - offsets[0] !== size) {
      throw new InvalidDataset("dataset package tensors do not tile the data section");
    }
    expected = offsets[1];
  }
  if (dataStart + expected !== blob.size) throw new InvalidDataset("dataset package has trailing or missing data");

  const [labelStart, labelEnd] = labels.data_offsets;
  const labelValues = new BigInt64Array(await blob.slice(dataStart + labelStart, dataStart + labelEnd).arrayBuffer());
  const classes = BigInt(schema.class_names.length);
  if (labelValues.some((l) => l < 0n || l >= classes)) throw new InvalidDataset(`labels outside [0, ${classes})`);
  const step = 1 << 20; // a multiple of 4: slices hold whole float32 values
  for (let at = features.data_offsets[0]; at < features.data_offsets[1]; at += step) {
    const end = Math.min(at + step, features.data_offsets[1]);
    const values = new Float32Array(await blob.slice(dataStart + at, dataStart + end).arrayBuffer());
    if (!values.every(Number.isFinite)) throw new InvalidDataset("features contain NaN or infinity");
  }
  return { schema, rows };
}
