// Constants that mirror the contracts, as GET /api/config serves them: the ε and δ fixed-point
// scales, the job and dataset statuses and the enclave roles (their one definition is
// enclave_worker/trusted/onchain.py), and the ERC-20 functions the UI calls on a payment token
// (marketplace/abi.py's ERC20_ABI). None is copied here: app.js hands over the config once at
// start-up, before any page renders. The contracts' own ABIs come from the generated abi.js.

let served = null;

/** Take the chain's constants from /api/config (called once by app.js). */
export function useChainConstants(cfg) {
  served = {
    epsilonScale: Number(cfg.epsilon_scale),
    deltaScale: Number(cfg.delta_scale),
    jobStatuses: cfg.job_statuses,
    datasetStatuses: cfg.dataset_statuses,
    roles: cfg.roles,
    erc20Abi: cfg.erc20_abi,
  };
}

function constants() {
  if (!served) throw new Error("The gateway's configuration could not be loaded; reload the page.");
  return served;
}

/** ε as the contracts hold it (an integer in 1/epsilon_scale units), from a decimal ε. */
export function epsilonUnits(epsilon) {
  return BigInt(Math.round(Number(epsilon) * constants().epsilonScale));
}

/** A decimal ε, from the contracts' integer units (bigint, number or decimal string). */
export function epsilonFromUnits(units) {
  return Number(units) / constants().epsilonScale;
}

/** δ as the contracts hold it (an integer in 1/delta_scale units), from a decimal δ. */
export function deltaUnits(delta) {
  return BigInt(Math.round(Number(delta) * constants().deltaScale));
}

function nameOf(table, code) {
  return Object.keys(table).find((name) => table[name] === Number(code));
}

/** The API's name of a job status number read from the chain (e.g. a revert's argument), or undefined. */
export function jobStatusName(code) {
  return nameOf(constants().jobStatuses, code);
}

/** The API's name of a dataset status number read from the chain (e.g. a revert's argument), or undefined. */
export function datasetStatusName(code) {
  return nameOf(constants().datasetStatuses, code);
}

/** Every dataset status the API can report, in on-chain order. */
export function datasetStatusNames() {
  const table = constants().datasetStatuses;
  return Object.keys(table).sort((a, b) => table[a] - table[b]);
}

/** The on-chain number of an enclave role named as the API names it ("trainer", "key_manager"); throws for an unknown name. */
export function roleNumber(name) {
  const number = constants().roles[name];
  if (number === undefined) throw new Error(`The gateway serves no enclave role named ${name}.`);
  return number;
}

/** The ERC-20 functions the UI calls on a payment token, as JSON ABI. */
export function erc20Abi() {
  return constants().erc20Abi;
}
