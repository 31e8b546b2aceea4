// A provider's CSV file → the arrays and schema of a canonical dataset package.
//
// The rules (docs/web-crypto.md; tests/web/test_browser_crypto.py holds a Python reference):
// - RFC 4180: comma-separated, fields may be quoted with `"` (a quote inside is doubled), lines end
//   in LF or CRLF; a UTF-8 byte-order mark is ignored; blank lines are skipped. A semicolon or a tab
//   may separate the fields instead (`separator`; {@link sniffSeparator} tells which a file uses).
// - The first row names the columns (names are trimmed, must be non-empty and distinct).
// - One column holds the label (the last one unless named); every other column, in file order,
//   is a numeric feature: schema feature_names = those names, feature_shape = [their count].
// - A feature cell, trimmed, is a decimal number (`-1.5`, `2e-3`, `.5`); anything else, an empty
//   cell, or a value that overflows float32 is refused with its row and column. Values are parsed
//   to float64 and rounded to float32 (as numpy's `astype(np.float32)` does).
// - Labels are the trimmed label cells. class_names are the distinct labels sorted by integer value
//   when every label is an integer (`0, 1, 2, 10`), otherwise by Unicode code point (Python's
//   `sorted()`); a row's label is the index of its class. At least two classes are required.

import { InvalidCsv } from "./errors.js";
import { compareCodePoints, SCHEMA_VERSION } from "./package.js";

const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;
const DECIMAL_COMMA = /^[+-]?\d*,\d+$/;

/** The field separators a file may use, with the words that name them. */
export const SEPARATORS = Object.freeze({ ",": "comma", ";": "semicolon", "\t": "tab" });

/**
 * How a separator is named to a person: "comma-separated", "semicolon-separated", "tab-separated".
 * @param {string} separator  a key of {@link SEPARATORS}
 * @returns {string}
 */
export function separatorName(separator) {
  const word = SEPARATORS[separator];
  if (!word) throw new TypeError(`not a CSV separator: ${JSON.stringify(separator)}`);
  return `${word}-separated`;
}

/**
 * The separator a CSV text uses, read from its first lines: the one that splits the header into
 * the most columns and every following sampled line into as many (a comma wins a tie).
 * @param {string} text  the file, or its beginning
 * @returns {string}  ",", ";" or "\t"
 */
export function sniffSeparator(text) {
  let sample = text.slice(0, 1 << 16);
  if (sample.length < text.length && sample.includes("\n")) sample = sample.slice(0, sample.lastIndexOf("\n") + 1);
  let best = ",";
  let bestScore = [-1, -1];
  for (const separator of Object.keys(SEPARATORS)) {
    let rows;
    try {
      rows = splitCsv(sample, { separator }).slice(0, 50);
    } catch {
      continue; // a quote the sample cut short, or a stray quote under this separator
    }
    if (!rows.length) continue;
    const width = rows[0].cells.length;
    if (width < 2) continue;
    const consistent = rows.every((r) => r.cells.length === width);
    const score = [consistent ? 1 : 0, width]; // a consistent split beats a wider ragged one
    if (score[0] > bestScore[0] || (score[0] === bestScore[0] && score[1] > bestScore[1])) [best, bestScore] = [separator, score];
  }
  return best;
}

/**
 * Split CSV text into rows of raw cells (RFC 4180).
 * @param {string} text
 * @param {{separator?: string}} [options]  "," (default), ";" or "\t"
 * @returns {{cells: string[], line: number}[]} rows with the 1-based line each starts on
 * @throws {InvalidCsv} an unterminated quoted field or a stray quote
 */
export function splitCsv(text, { separator = "," } = {}) {
  if (!(separator in SEPARATORS)) throw new TypeError(`not a CSV separator: ${JSON.stringify(separator)}`);
  if (text.startsWith("\ufeff")) text = text.slice(1);
  /** @type {{cells: string[], line: number}[]} */
  const rows = [];
  let cells = [];
  let cell = "";
  let line = 1;
  let rowLine = 1;
  let quoted = false; // inside a quoted field
  let wasQuoted = false; // the current field was quoted (only a separator may follow)
  const endRow = () => {
    cells.push(cell);
    if (!(cells.length === 1 && cells[0] === "" && !wasQuoted)) rows.push({ cells, line: rowLine });
    cells = [];
    cell = "";
    wasQuoted = false;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') {
        quoted = false;
      } else {
        if (c === "\n") line++;
        cell += c;
      }
    } else if (c === '"' && cell.trim() === "" && !wasQuoted) {
      quoted = true;
      wasQuoted = true;
      cell = "";
    } else if (c === separator) {
      cells.push(cell);
      cell = "";
      wasQuoted = false;
    } else if (c === "\n" || (c === "\r" && text[i + 1] === "\n")) {
      if (c === "\r") i++;
      endRow();
      line++;
      rowLine = line;
    } else if (wasQuoted && c.trim() !== "") {
      throw new InvalidCsv(`line ${line}: unexpected ${JSON.stringify(c)} after a quoted field`);
    } else if (c === '"') {
      throw new InvalidCsv(`line ${line}: a quote inside an unquoted field (quote the whole field and double the quote)`);
    } else {
      cell += c;
    }
  }
  if (quoted) throw new InvalidCsv(`line ${rowLine}: a quoted field is not closed`);
  if (cell !== "" || cells.length || wasQuoted) endRow();
  return rows;
}

/**
 * @typedef {object} CsvDataset
 * @property {Float32Array} features  rows × feature count, row-major
 * @property {BigInt64Array} labels   class index per row
 * @property {import("./package.js").Schema} schema
 * @property {number} rows
 */

/**
 * Turn CSV text into a dataset (see the rules at the top of this module).
 * @param {string} text
 * @param {{labelColumn?: string, separator?: string}} [options]  the label column's header name
 *   (default: the last column); the field separator (default ",")
 * @returns {CsvDataset}
 * @throws {InvalidCsv} empty file, no data rows, unknown label column, ragged row, non-numeric cell, one class
 */
export function parseCsv(text, { labelColumn, separator = "," } = {}) {
  return datasetFromRows(splitCsv(text, { separator }), { labelColumn, separator });
}

/**
 * The header's column names, checked (trimmed, non-empty, distinct).
 * @param {{cells: string[], line: number}[]} rows  from {@link splitCsv}
 * @returns {string[]}
 * @throws {InvalidCsv}
 */
export function headerNames(rows) {
  if (!rows.length) throw new InvalidCsv("the CSV file is empty");
  const names = rows[0].cells.map((n) => n.trim());
  names.forEach((name, i) => {
    if (!name) throw new InvalidCsv(`column ${i + 1} has no name in the header row`);
    if (names.indexOf(name) !== i) throw new InvalidCsv(`column name ${JSON.stringify(name)} appears twice in the header row`);
  });
  return names;
}

/**
 * {@link parseCsv} for rows already split (so a page can preview them and parse them from one split).
 * @param {{cells: string[], line: number}[]} rows  from {@link splitCsv}
 * @param {{labelColumn?: string, separator?: string}} [options]  `separator`: the one the rows were split with
 * @returns {CsvDataset}
 * @throws {InvalidCsv}
 */
export function datasetFromRows(rows, { labelColumn, separator = "," } = {}) {
  const names = headerNames(rows);
  const labelAt = labelColumn === undefined ? names.length - 1 : names.indexOf(labelColumn.trim());
  if (labelAt < 0) throw new InvalidCsv(`no column named ${JSON.stringify(labelColumn)} (columns: ${names.join(", ")})`);
  const featureAt = names.map((_, i) => i).filter((i) => i !== labelAt);
  if (!featureAt.length) {
    const other = Object.keys(SEPARATORS).find((s) => s !== separator && names[0].includes(s));
    throw new InvalidCsv(
      "the CSV file has no feature columns besides the label" +
        (other ? ` (read as ${separatorName(separator)}, its header is one column; it looks ${separatorName(other)})` : ""),
    );
  }
  const data = rows.slice(1);
  if (!data.length) throw new InvalidCsv("the CSV file has a header row but no data rows");

  const features = new Float32Array(data.length * featureAt.length);
  /** @type {string[]} */
  const labelText = [];
  data.forEach(({ cells, line }, r) => {
    if (cells.length !== names.length) {
      throw new InvalidCsv(`line ${line} has ${cells.length} cells, the header has ${names.length}`);
    }
    featureAt.forEach((col, j) => {
      const cell = cells[col].trim();
      const value = DECIMAL.test(cell) ? Math.fround(Number(cell)) : NaN;
      if (!Number.isFinite(value)) {
        const what =
          cell === ""
            ? "is empty"
            : DECIMAL.test(cell)
              ? `${cell} is too large for float32`
              : DECIMAL_COMMA.test(cell) && separator !== ","
                ? `${JSON.stringify(cell)} is not a number (this file writes decimals with a comma; write ${cell.replace(",", ".")})`
                : `${JSON.stringify(cell)} is not a number`;
        throw new InvalidCsv(`line ${line}, column ${JSON.stringify(names[col])}: ${what}`);
      }
      features[r * featureAt.length + j] = value;
    });
    const label = cells[labelAt].trim();
    if (!label) throw new InvalidCsv(`line ${line}, label column ${JSON.stringify(names[labelAt])} is empty`);
    labelText.push(label);
  });

  const classNames = classOrder([...new Set(labelText)]);
  if (classNames.length < 2) {
    throw new InvalidCsv(
      `label column ${JSON.stringify(names[labelAt])} holds a single class ${JSON.stringify(classNames[0])}; classification needs at least two`,
    );
  }
  const index = new Map(classNames.map((name, i) => [name, BigInt(i)]));
  const labels = BigInt64Array.from(labelText, (l) => index.get(l));
  const schema = {
    version: SCHEMA_VERSION,
    task: "classification",
    feature_names: featureAt.map((i) => names[i]),
    feature_shape: [featureAt.length],
    class_names: classNames,
  };
  return { features, labels, schema, rows: data.length };
}

/**
 * Read and parse a CSV File (UTF-8).
 * @param {Blob} file
 * @param {{labelColumn?: string, separator?: string}} [options]
 * @returns {Promise<CsvDataset>}
 */
export async function readCsvFile(file, options) {
  return parseCsv(await file.text(), options);
}

/**
 * Class names in index order: numerically when all are integers, else by code point.
 * @param {string[]} names  distinct
 * @returns {string[]}
 */
export function classOrder(names) {
  if (names.every((n) => INTEGER.test(n))) {
    return [...names].sort((a, b) => {
      const d = BigInt(a) - BigInt(b);
      return d < 0n ? -1 : d > 0n ? 1 : compareCodePoints(a, b);
    });
  }
  return [...names].sort(compareCodePoints);
}
