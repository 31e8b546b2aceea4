"""Model cards: what a trained model is and how to use it, from what the chain and the receipt committed to.

A card says, for one completed job: the architecture; the inputs, in order, with the clipping
and scaling the model applies itself (the provider's declared feature bounds — each bounded
column clipped to them and scaled to [-1, 1] — and the spec's ``input_mean`` / ``input_scale``,
which replace the bounds' scaling; layers inside the model: callers pass raw values); the outputs (logits, one per class, with the class
names in order); the datasets and their providers; the privacy accounting (ε spent, δ, the
accountant, noise multiplier, sample rate, steps and epochs, as the enclave's metrics document
records them); and the receipt (enclave, hashes, the transaction and block that settled it).

Everything on it is public (the spec, schema and metrics documents are stored in clear, their
hashes on-chain), so anyone can build the card of any completed job, and the consumer who
decrypts the weights checks them against the card's ``model_hash``. The format, in the spirit of
Hugging Face's model cards, is a JSON document (``format: sterling-model-card/1``) and its
Markdown rendering; the gateway serves the same document (``GET /api/jobs/{id}/card``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.models import ModelSpec

from .contracts import EPSILON_SCALE, JobStatus, MarketClient
from .errors import CiphertextTampered, JobNotReady

CARD_FORMAT = "sterling-model-card/1"


class BlobReader(Protocol):
    def get(self, name: str) -> bytes: ...


def _checked(blobs: BlobReader, digest: bytes, what: str) -> bytes:
    raw = blobs.get(digest.hex())
    if hashlib.sha256(raw).digest() != digest:
        raise CiphertextTampered(f"the stored {what} does not match its on-chain hash")
    return raw


def _inputs(spec: ModelSpec, schema: Schema) -> dict[str, Any]:
    names = list(schema.feature_names)
    width = len(names)
    columns: list[dict[str, Any]] = [{"index": i, "name": n} for i, n in enumerate(names)]
    standardisation = "none: the model takes the values as the providers' datasets hold them"
    clipping = "none: the dataset schema declares no feature bounds"
    standardised = spec.input_mean is not None and spec.input_scale is not None
    vocabularies = dict(schema.categories)
    for column in columns:
        if column["name"] in vocabularies:  # the value is the category's index in this list
            column["categories"] = list(vocabularies[column["name"]])
    if schema.feature_bounds is not None:
        for column, bounds in zip(columns, schema.feature_bounds, strict=False):
            if bounds is not None:
                column["bounds"] = [bounds[0], bounds[1]]
        clipping = (
            "inside the model: each column with declared bounds [lo, hi] (the provider's public declaration, "
            "never computed from the rows) is clipped to them first; columns without bounds are not clipped"
        )
        if not standardised:
            standardisation = (
                "inside the model: each column with declared bounds [lo, hi], once clipped, becomes "
                "(value - (lo + hi) / 2) / ((hi - lo) / 2), in [-1, 1]; other columns pass unchanged; pass raw values"
            )
    if spec.input_mean is not None and spec.input_scale is not None:
        after = " after clipping to the declared bounds" if schema.feature_bounds is not None else ""
        if len(spec.input_mean) == width:
            for column, mean, scale in zip(columns, spec.input_mean, spec.input_scale, strict=True):
                column["mean"], column["scale"] = mean, scale
            standardisation = f"inside the model{after}: each column becomes (value - mean) / scale; pass raw values"
        else:  # one pair per channel of an image-shaped input
            standardisation = (
                f"inside the model{after}, per channel: (value - mean[c]) / scale[c] with "
                f"mean = {list(spec.input_mean)}, scale = {list(spec.input_scale)}; pass raw values"
            )
    return {
        "shape": ["rows", *schema.feature_shape],
        "dtype": "float32",
        "columns": columns,
        "clipping": clipping,
        "standardisation": standardisation,
    }


def build_card(market: MarketClient, blobs: BlobReader, job_id: int) -> dict[str, Any]:
    """The card of completed job ``job_id`` (see the module's description).

    Raises:
        JobNotReady: the job has not completed.
        CiphertextTampered: a stored document does not match its on-chain hash.
    """
    job = market.job(job_id)
    if job.status is not JobStatus.COMPLETED:
        raise JobNotReady(f"job {job_id} is {job.status.name.lower()}, not completed: it has no model yet")
    result = market.result_submitted(job_id)
    spec = ModelSpec.from_bytes(_checked(blobs, job.model_spec_hash, "model spec"))
    datasets = [market.dataset(d) for d in job.dataset_ids]
    schema = Schema.from_json(json.loads(_checked(blobs, datasets[0].schema_hash, "dataset schema")))
    metrics = json.loads(_checked(blobs, result.metrics_hash, "metrics document"))
    architecture: dict[str, Any] = {"name": spec.architecture, "activation": spec.activation}
    if spec.hidden_sizes:
        architecture["hidden_sizes"] = list(spec.hidden_sizes)
    if spec.channels:
        architecture["channels"] = list(spec.channels)
    if spec.depth is not None:
        architecture.update(depth=spec.depth, width=spec.base_width, norm_groups=spec.norm_groups, normalisation="GroupNorm")
    return {
        "format": CARD_FORMAT,
        "job": {"id": job_id, "chain_id": market.chain.chain_id, "market": market.address, "consumer": job.consumer},
        "model": {
            "architecture": architecture,
            "task": schema.task,
            "spec_hash": job.model_spec_hash.hex(),
            "spec": json.loads(spec.model_dump_json()),
            "weights": "safetensors (torch state dict); ONNX on export",
            "model_hash": result.model_hash.hex(),
        },
        "inputs": _inputs(spec, schema),
        "outputs": _outputs(schema),
        "data": {
            "rows": metrics.get("rows"),
            "datasets": [
                {"id": int(d.dataset_id), "provider": d.provider, "content_hash": d.content_hash.hex(), "price": str(int(p))}
                for d, p in zip(datasets, job.prices, strict=True)
            ],
        },
        "privacy": {
            "epsilon": metrics["epsilon_spent"],
            "epsilon_training": metrics["epsilon_training"],
            "epsilon_on_chain": result.epsilon_spent / EPSILON_SCALE,
            "delta": metrics["delta"],
            "accountant": metrics["accountant"],
            "noise_multiplier": metrics["noise_multiplier"],
            "sample_rate": metrics["sample_rate"],
            "steps": metrics["steps"],
            "epochs": metrics["epochs"],
            "max_grad_norm": spec.max_grad_norm,
            "private_metrics": metrics.get("private_metrics"),
        },
        "receipt": {
            "enclave": result.enclave,
            "model_hash": result.model_hash.hex(),
            "result_hash": result.result_hash.hex(),
            "metrics_hash": result.metrics_hash.hex(),
            "block": result.block_number,
            "transaction": result.tx_hash,
        },
    }


def _column_table(columns: list[dict[str, Any]]) -> list[str]:
    """The inputs as a Markdown table; a bounds column only when some column declares bounds."""
    if not any("bounds" in c for c in columns):
        return [
            "| # | input column | mean | scale |",
            "|---|---|---|---|",
            *(f"| {c['index']} | {c['name']} | {c.get('mean', '')} | {c.get('scale', '')} |" for c in columns),
        ]

    def bounds(c: dict[str, Any]) -> str:
        return f"[{c['bounds'][0]}, {c['bounds'][1]}]" if "bounds" in c else ""

    return [
        "| # | input column | declared bounds (clipped to) | mean | scale |",
        "|---|---|---|---|---|",
        *(f"| {c['index']} | {c['name']} | {bounds(c)} | {c.get('mean', '')} | {c.get('scale', '')} |" for c in columns),
    ]


def _outputs(schema: Schema) -> dict[str, Any]:
    """What each of the model's outputs is, by task (enclave_worker/trusted/tasks.py)."""
    if schema.task == "regression":
        assert schema.target_bounds is not None
        return {
            "kind": "targets",
            "targets": [
                {"index": i, "name": n, "bounds": list(b)}
                for i, (n, b) in enumerate(zip(schema.target_names, schema.target_bounds, strict=True))
            ],
            "prediction": "each output is its target in the target's units (trained on labels clipped to the declared bounds)",
        }
    if schema.task == "survival":
        starts = (0.0, *schema.time_bins[:-1])
        return {
            "kind": "hazard_logits",
            "intervals": [
                {"index": i, "name": f"({a:g}, {b:g}]", "start": a, "end": b}
                for i, (a, b) in enumerate(zip(starts, schema.time_bins, strict=True))
            ],
            "prediction": (
                "h_k = sigmoid(output k) is the hazard of interval k; S(t_k) = product over j <= k of (1 - h_j); risk = 1 - S(last end)"
            ),
        }
    return {
        "kind": "logits",
        "classes": [{"index": i, "name": n} for i, n in enumerate(schema.class_names)],
        "prediction": "the class of the largest logit; softmax(logits) for probabilities",
    }


def _output_table(outputs: dict[str, Any]) -> list[str]:
    heading = {"logits": "| logit | class |", "targets": "| output | target (declared bounds) |",
               "hazard_logits": "| output | hazard of the interval |"}[_kind(outputs)]  # fmt: skip

    def name(c: dict[str, Any]) -> str:
        return f"{c['name']} ({c['bounds'][0]:g} to {c['bounds'][1]:g})" if "bounds" in c else str(c["name"])

    return [heading, "|---|---|", *(f"| {c['index']} | {name(c)} |" for c in output_columns(outputs))]


def output_columns(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """A card's output columns, whatever the task: its classes, targets or time intervals."""
    return list(outputs[{"logits": "classes", "targets": "targets", "hazard_logits": "intervals"}[_kind(outputs)]])


def _kind(outputs: dict[str, Any]) -> str:
    return str(outputs.get("kind", "logits"))  # a classifier's card has always said "logits"


def schema_of_card(card: dict[str, Any]) -> Schema:
    """The dataset schema a card describes (inputs, their declared bounds, the task's outputs): what
    the model is rebuilt with."""
    columns = card["inputs"]["columns"]
    declared = tuple(tuple(c["bounds"]) if c.get("bounds") else None for c in columns)
    outputs, task = card["outputs"], card["model"]["task"]
    return Schema(
        task=task, feature_names=tuple(c["name"] for c in columns),
        feature_shape=tuple(int(d) for d in card["inputs"]["shape"][1:]),
        class_names=tuple(c["name"] for c in outputs.get("classes", ())),
        feature_bounds=declared if any(b is not None for b in declared) else None,  # the pairs the card shows
        target_names=tuple(c["name"] for c in outputs.get("targets", ())),
        target_bounds=tuple(tuple(c["bounds"]) for c in outputs["targets"]) if "targets" in outputs else None,
        time_bins=tuple(c["end"] for c in outputs.get("intervals", ())),
        categories=tuple((c["name"], tuple(c["categories"])) for c in columns if "categories" in c),
    )  # fmt: skip


def _architecture_name(arch: dict[str, Any]) -> str:
    """"mlp", "logistic regression", "resnet-32": the name, with the depth where the spec sets one."""
    name = str(arch["name"]).replace("_", " ")
    return f"{name}-{arch['depth']}" if "depth" in arch else name


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown (a model card to keep next to the weights)."""
    job, model, inputs, outputs, privacy, receipt = (card[k] for k in ("job", "model", "inputs", "outputs", "privacy", "receipt"))
    arch = model["architecture"]
    shape = ", ".join(str(d) for d in inputs["shape"])
    lines = [
        f"# Model of Sterling job {job['id']}",
        "",
        f"A {_architecture_name(arch)} ({model['task']}) trained with differential privacy inside an attested enclave "
        f"on {len(card['data']['datasets'])} provider dataset(s); chain {job['chain_id']}, market {job['market']}.",
        "",
        "## How to use it",
        "",
        f"- Input: float32 of shape ({shape}); columns in this order. Standardisation: {inputs['standardisation']}.",
        *([f"- Clipping: {inputs['clipping']}."] if "bounds" in inputs.get("clipping", "") else []),
        f"- Output: {len(output_columns(outputs))} {_kind(outputs).replace('_', ' ')}; {outputs['prediction']}.",
        "",
        *(_column_table(inputs["columns"])),
        "",
        *_output_table(outputs),
        "",
        "## Privacy",
        "",
        f"(ε = {privacy['epsilon']:.4g}, δ = {privacy['delta']:.3g})-differentially private with respect to each provider's rows "
        f"({privacy['accountant']} accountant; noise multiplier {privacy['noise_multiplier']:.4g}, sample rate "
        f"{privacy['sample_rate']:.4g}, {privacy['steps']} steps over {privacy['epochs']} epochs, "
        f"clipping norm {privacy['max_grad_norm']}).",
        "",
        "## Data",
        "",
        "| dataset | provider | content hash | price |",
        "|---|---|---|---|",
        *(f"| {d['id']} | {d['provider']} | {d['content_hash'][:16]}… | {d['price']} |" for d in card["data"]["datasets"]),
        "",
        "## Receipt",
        "",
        f"- enclave {receipt['enclave']}; transaction {receipt['transaction']} (block {receipt['block']})",
        f"- model hash (sha256 of the safetensors weights) {receipt['model_hash']}",
        f"- result hash {receipt['result_hash']}, metrics hash {receipt['metrics_hash']}",
        "",
    ]
    return "\n".join(lines)
