// How good a job's model is on the consumer's own labelled rows, computed in this browser: the
// decrypted weights and the rows never leave it, and no ε is spent (the rows are the consumer's).
// The same metrics and baselines as the Python SDK's marketplace.model_metrics.evaluate (a test
// compares both on the same model and rows): accuracy and ROC AUC against the majority class;
// RMSE, MAE and R² against the mean of each target; the concordance index and the integrated
// Brier score against Kaplan–Meier. Dense models (logistic regression, MLP) run here; image
// networks are evaluated with the SDK.

import { sniffSeparator, splitCsv } from "./crypto/csv.js";

export class EvaluationError extends Error {}

const DTYPES = { F32: Float32Array, F64: Float64Array, I64: BigInt64Array };

/**
 * The tensors of a safetensors file, as plain arrays of numbers.
 * @param {Uint8Array} bytes
 * @returns {Map<string, {shape: number[], data: number[]}>}
 */
export function readTensors(bytes) {
  if (bytes.length < 8) throw new EvaluationError("the model is too short to be safetensors");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (8 + headerLen > bytes.length) throw new EvaluationError("the model is not safetensors (invalid header length)");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const tensors = new Map();
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const Type = DTYPES[entry.dtype];
    if (!Type) throw new EvaluationError(`tensor ${name} has dtype ${entry.dtype}, which this page does not read`);
    const [begin, end] = entry.data_offsets;
    const raw = bytes.slice(8 + headerLen + begin, 8 + headerLen + end); // a copy: aligned for the typed array
    const typed = new Type(raw.buffer, 0, (end - begin) / Type.BYTES_PER_ELEMENT);
    tensors.set(name, { shape: entry.shape, data: Array.from(typed, Number) });
  }
  return tensors;
}

const ACTIVATIONS = { relu: (v) => (v > 0 ? v : 0), tanh: Math.tanh, square: (v) => v * v };

/**
 * The model as a function of one row (its features, numbers) to its outputs, from the weights'
 * state dict: the registry's dense models are an nn.Sequential whose modules are told apart by
 * their keys (docs/models.md); a module without keys is the spec's activation.
 * @param {Map<string, {shape: number[], data: number[]}>} tensors
 * @param {{architecture: string, activation?: string}} spec
 * @returns {(row: number[]) => number[]}
 */
export function denseModel(tensors, spec) {
  if (!["logistic_regression", "mlp"].includes(spec.architecture)) {
    throw new EvaluationError(`a ${spec.architecture} model runs in Python: evaluate it with marketplace.model_metrics.evaluate`);
  }
  const modules = new Map();
  for (const [name, tensor] of tensors) {
    const dot = name.indexOf(".");
    const index = Number(name.slice(0, dot));
    if (!modules.has(index)) modules.set(index, new Map());
    modules.get(index).set(name.slice(dot + 1), tensor);
  }
  const last = Math.max(...modules.keys());
  const activation = ACTIVATIONS[spec.activation || "relu"];
  const layers = [];
  for (let i = 0; i <= last; i++) {
    const m = modules.get(i);
    if (!m) layers.push((x) => x.map(activation));
    else if (m.has("low")) layers.push(clipScale(m));
    else if (m.has("mean")) layers.push((x) => x.map((v, j) => (v - m.get("mean").data[j]) / m.get("scale").data[j]));
    else if (m.has("categorical")) layers.push(embed(m));
    else if (m.has("score.weight")) layers.push(proportionalHazard(m));
    else if (m.has("weight")) layers.push(linear(m.get("weight"), m.get("bias")));
    else if (m.has("center")) layers.push((x) => x.map((v, j) => m.get("center").data[j] + m.get("half_range").data[j] * v));
    else throw new EvaluationError(`module ${i} of the model is of a kind this page does not run`);
  }
  return (row) => layers.reduce((x, layer) => layer(x), row);
}

function clipScale(m) {
  const [low, high, center, half] = ["low", "high", "center", "half_range"].map((k) => m.get(k).data);
  return (x) => x.map((v, j) => (Math.max(Math.min(v, high[j]), low[j]) - center[j]) / half[j]);
}

function linear(weight, bias) {
  const [out, inp] = weight.shape;
  return (x) => {
    const y = new Array(out);
    for (let o = 0; o < out; o++) {
      let s = bias ? bias.data[o] : 0;
      for (let k = 0; k < inp; k++) s += weight.data[o * inp + k] * x[k];
      y[o] = s;
    }
    return y;
  };
}

function embed(m) {
  const numeric = m.get("numeric").data;
  const categorical = m.get("categorical").data;
  const tables = categorical.map((_, j) => m.get(`embeddings.${j}.weight`));
  return (x) => {
    const out = numeric.map((i) => x[i]);
    categorical.forEach((i, j) => {
      const [size, dim] = tables[j].shape;
      const code = Math.min(Math.max(Math.round(x[i]), 0), size - 1);
      for (let d = 0; d < dim; d++) out.push(tables[j].data[code * dim + d]);
    });
    return out;
  };
}

function proportionalHazard(m) {
  const score = linear(m.get("score.weight"), null);
  const baseline = m.get("baseline.weight").data;
  return (x) => {
    const s = score(x)[0];
    return baseline.map((b) => s + b);
  };
}

/** Class probabilities, the targets, or the survival curve at the interval ends (tasks.predictions). */
export function predictions(task, outputs) {
  if (task === "classification") {
    const top = Math.max(...outputs);
    const exps = outputs.map((v) => Math.exp(v - top));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((v) => v / total);
  }
  if (task === "survival") {
    let log = 0;
    return outputs.map((v) => {
      log += v > 0 ? -v - Math.log1p(Math.exp(-v)) : -Math.log1p(Math.exp(v)); // log sigmoid(-v) = log(1 - h)
      return Math.exp(log);
    });
  }
  return outputs;
}

/**
 * The consumer's rows from CSV: the model card's input columns by name, and the labels — the one
 * other column (classification: a class name or index), the targets by name (regression), or
 * `time` and `event` (survival).
 */
export function rowsFromCsv(text, card) {
  const table = splitCsv(text, { separator: sniffSeparator(text) });
  if (table.length < 2) throw new EvaluationError("the file needs a header row and at least one row of data");
  const names = table[0].cells.map((c) => c.trim());
  const at = (name) => {
    const i = names.indexOf(name);
    if (i < 0) throw new EvaluationError(`the file has no column ${JSON.stringify(name)} (the model's inputs and labels are named in its card)`);
    return i;
  };
  const inputs = card.inputs.columns.map((c) => at(c.name));
  const task = card.model.task;
  let labelColumns;
  if (task === "regression") labelColumns = card.outputs.targets.map((t) => at(t.name));
  else if (task === "survival") labelColumns = [at("time"), at("event")];
  else {
    const others = names.map((_, i) => i).filter((i) => !inputs.includes(i));
    if (others.length !== 1) throw new EvaluationError(`the file needs exactly one column besides the inputs (the class), found ${others.length}`);
    labelColumns = others;
  }
  const classes = (card.outputs.classes || []).map((c) => c.name);
  const number = (cell, line, name) => {
    const v = Number(cell.trim());
    if (cell.trim() === "" || !Number.isFinite(v)) throw new EvaluationError(`line ${line}: ${JSON.stringify(name)} is ${JSON.stringify(cell)}, not a number`);
    return v;
  };
  const features = [];
  const labels = [];
  for (const { cells, line } of table.slice(1)) {
    if (cells.length !== names.length) throw new EvaluationError(`line ${line} has ${cells.length} cells, the header ${names.length}`);
    features.push(inputs.map((i) => number(cells[i], line, names[i])));
    if (task === "classification") {
      const cell = cells[labelColumns[0]].trim();
      const index = classes.includes(cell) ? classes.indexOf(cell) : Number.isInteger(Number(cell)) && cell !== "" ? Number(cell) : -1;
      if (index < 0 || index >= classes.length) throw new EvaluationError(`line ${line}: ${JSON.stringify(cell)} is not one of the classes ${classes.join(", ")}`);
      labels.push(index);
    } else {
      labels.push(labelColumns.map((i) => number(cells[i], line, names[i])));
    }
  }
  return { features, labels };
}

/**
 * Run the model on the rows and measure it against the task's baseline.
 * @param {{weights: Uint8Array, card: object, csvText: string}} input
 */
export function evaluateCsv({ weights, card, csvText }) {
  const model = denseModel(readTensors(weights), card.model.spec);
  const { features, labels } = rowsFromCsv(csvText, card);
  const task = card.model.task;
  const predicted = features.map((row) => predictions(task, model(row)));
  const metrics = { classification: classificationMetrics, regression: regressionMetrics, survival: survivalMetrics }[task];
  return { task, rows: features.length, ...metrics(predicted, labels, card) };
}

function classificationMetrics(probabilities, labels, card) {
  const k = card.outputs.classes.length;
  const argmax = (p) => p.reduce((best, v, i) => (v > p[best] ? i : best), 0);
  const accuracy = mean(probabilities.map((p, i) => (argmax(p) === labels[i] ? 1 : 0)));
  const counts = new Array(k).fill(0);
  labels.forEach((y) => counts[y]++);
  const majority = argmax(counts);
  const report = {
    accuracy,
    baseline: { name: `majority class (${card.outputs.classes[majority].name})`, accuracy: counts[majority] / labels.length },
  };
  const present = counts.map((c, i) => (c > 0 ? i : -1)).filter((i) => i >= 0);
  if (present.length > 1) {
    const auc = (c) => rocAuc(probabilities.map((p) => p[c]), labels.map((y) => y === c));
    report.roc_auc = k === 2 ? auc(1) : mean(present.map(auc));
  }
  return report;
}

/** The Mann–Whitney AUC of `scores` for the positives, ties counted half. */
function rocAuc(scores, positive) {
  const order = scores.map((s, i) => i).sort((a, b) => scores[a] - scores[b]);
  let rankSumPositive = 0;
  for (let start = 0; start < order.length; ) {
    let end = start;
    while (end + 1 < order.length && scores[order[end + 1]] === scores[order[start]]) end++;
    const rank = (start + end) / 2 + 1;
    for (let i = start; i <= end; i++) if (positive[order[i]]) rankSumPositive += rank;
    start = end + 1;
  }
  const p = positive.filter(Boolean).length;
  const n = positive.length - p;
  return (rankSumPositive - (p * (p + 1)) / 2) / (p * n);
}

function regressionMetrics(predicted, labels, card) {
  const m = card.outputs.targets.length;
  const column = (rows, j) => rows.map((r) => r[j]);
  const perTarget = [];
  let mae = 0;
  let r2 = 0;
  let baselineRmse = 0;
  let baselineMae = 0;
  for (let j = 0; j < m; j++) {
    const y = column(labels, j);
    const f = column(predicted, j);
    const average = mean(y);
    perTarget.push(Math.sqrt(mean(y.map((v, i) => (v - f[i]) ** 2))));
    mae += mean(y.map((v, i) => Math.abs(v - f[i]))) / m;
    const total = y.reduce((s, v) => s + (v - average) ** 2, 0);
    const residual = y.reduce((s, v, i) => s + (v - f[i]) ** 2, 0);
    r2 += (total === 0 ? (residual === 0 ? 1 : 0) : 1 - residual / total) / m;
    baselineRmse += Math.sqrt(mean(y.map((v) => (v - average) ** 2))) / m;
    baselineMae += mean(y.map((v) => Math.abs(v - average))) / m;
  }
  return {
    rmse: mean(perTarget),
    mae,
    r2: labels.length >= 2 ? r2 : null,
    rmse_per_target: Object.fromEntries(card.outputs.targets.map((t, j) => [t.name, perTarget[j]])),
    baseline: { name: "mean of each target", rmse: baselineRmse, mae: baselineMae },
  };
}

function survivalMetrics(curves, labels, card) {
  const time = labels.map((l) => l[0]);
  const event = labels.map((l) => l[1] > 0.5);
  const ends = card.outputs.intervals.map((c) => c.end);
  const report = { concordance_index: concordance(time, event, curves.map((c) => 1 - c[c.length - 1])) };
  const lo = Math.min(...time);
  const hi = Math.max(...time);
  const columns = ends.map((t, k) => [t, k]).filter(([t]) => lo <= t && t < hi);
  const baseline = { name: "Kaplan–Meier", concordance_index: 0.5 };
  if (columns.length >= 2) {
    const times = columns.map(([t]) => t);
    const km = kaplanMeier(time, event);
    const kmAt = times.map((t) => stepAt(km, t));
    report.integrated_brier_score = integratedBrier(time, event, times, (i, j) => curves[i][columns[j][1]]);
    report.brier_times = times;
    baseline.integrated_brier_score = integratedBrier(time, event, times, (_, j) => kmAt[j]);
  }
  report.baseline = baseline;
  return report;
}

/** Harrell's C as scikit-survival counts it: a pair is comparable when the earlier time is an
 * event (an event and a censoring at the same time: the event first); risks within 1e-8 tie. */
function concordance(time, event, risk) {
  let concordant = 0;
  let tied = 0;
  let comparable = 0;
  for (let i = 0; i < time.length; i++) {
    if (!event[i]) continue;
    for (let j = 0; j < time.length; j++) {
      if (!(time[j] > time[i] || (time[j] === time[i] && !event[j]))) continue;
      comparable++;
      if (Math.abs(risk[i] - risk[j]) <= 1e-8) tied++;
      else if (risk[i] > risk[j]) concordant++;
    }
  }
  if (!comparable) throw new EvaluationError("no comparable pair of rows: the concordance index needs an observed event before another row's time");
  return (concordant + 0.5 * tied) / comparable;
}

/** The product-limit curve: distinct times and the survival just after each. */
function kaplanMeier(time, event, { censoring = false } = {}) {
  const order = time.map((t, i) => i).sort((a, b) => time[a] - time[b]);
  const times = [];
  const values = [];
  let atRisk = time.length;
  let s = 1;
  for (let start = 0; start < order.length; ) {
    let end = start;
    while (end + 1 < order.length && time[order[end + 1]] === time[order[start]]) end++;
    let events = 0;
    let censored = 0;
    for (let i = start; i <= end; i++) event[order[i]] ? events++ : censored++;
    const d = censoring ? censored : events;
    const risk = censoring ? atRisk - events : atRisk; // censoring counted after the events at a tie
    if (risk > 0) s *= 1 - d / risk;
    times.push(time[order[start]]);
    values.push(s);
    atRisk -= end - start + 1;
    start = end + 1;
  }
  return { times, values };
}

function stepAt(curve, t) {
  let value = 1;
  for (let i = 0; i < curve.times.length && curve.times[i] <= t; i++) value = curve.values[i];
  return value;
}

/** The IPCW Brier score at each time, integrated by the trapezoid rule (sksurv's integrated_brier_score,
 * the censoring distribution estimated on the same rows). */
function integratedBrier(time, event, times, survival) {
  const censoring = kaplanMeier(time, event, { censoring: true });
  const weightAt = (t) => stepAt(censoring, t);
  const scores = times.map((t, j) => {
    let total = 0;
    for (let i = 0; i < time.length; i++) {
      const s = survival(i, j);
      if (time[i] <= t && event[i]) {
        const g = weightAt(time[i]);
        if (g > 0) total += (s * s) / g;
      } else if (time[i] > t) {
        const g = weightAt(t);
        if (g > 0) total += ((1 - s) * (1 - s)) / g;
      }
    }
    return total / time.length;
  });
  let area = 0;
  for (let j = 1; j < times.length; j++) area += ((scores[j] + scores[j - 1]) / 2) * (times[j] - times[j - 1]);
  return area / (times[times.length - 1] - times[0]);
}

function mean(values) {
  return values.reduce((a, b) => a + b, 0) / values.length;
}
