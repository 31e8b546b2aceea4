"""Portable models: a trained model exported to ONNX, and checked against torch before anyone relies on it.

:func:`export_onnx` writes the model (its standardisation layer included, so callers pass raw
values, as the model card says) with torch's ONNX exporter: one input ``features`` of shape
``(rows, *feature_shape)`` with the number of rows free, one output ``logits``. :func:`onnx_agreement`
runs the ONNX file with onnxruntime and the torch model on the same rows and reports how far apart
they are; :func:`export_checked` refuses a file whose answers differ (labels, or logits beyond a
tolerance). ONNX Runtime, not torch, is what most serving stacks run.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from enclave_worker.trusted.dataset import Schema

from .errors import SterlingError

INPUT, OUTPUT = "features", "logits"
OPSET = 18
LOGIT_TOLERANCE = 1e-4
"""Largest |ONNX − torch| accepted on a logit (float32 arithmetic in another order)."""


class ExportMismatch(SterlingError):
    """The exported ONNX model does not answer as the torch model does."""


@dataclass(frozen=True)
class Agreement:
    """ONNX against torch on the same rows."""

    rows: int
    labels_equal: int
    """Rows whose predicted class (argmax) is the same."""
    max_abs_diff: float
    """Largest difference of any logit."""

    @property
    def ok(self) -> bool:
        return self.labels_equal == self.rows and self.max_abs_diff <= LOGIT_TOLERANCE


def export_onnx(model: nn.Module, schema: Schema) -> bytes:
    """``model`` as an ONNX file (bytes), its batch dimension free."""
    model = model.eval()
    example = (torch.zeros(2, *schema.feature_shape, dtype=torch.float32),)
    exporter_logs = logging.getLogger("torch.onnx")
    level = exporter_logs.level
    exporter_logs.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            program = torch.onnx.export(
                model, example, input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                dynamic_shapes=({0: torch.export.Dim("rows", min=1)},), dynamo=True, verbose=False, external_data=False,
            )  # fmt: skip
        if program is None:
            raise ExportMismatch("torch's ONNX exporter returned nothing")
        exported: bytes = program.model_proto.SerializeToString()
    finally:
        exporter_logs.setLevel(level)
    return exported


def onnx_agreement(onnx_model: bytes, model: nn.Module, rows: np.ndarray) -> Agreement:
    """Run ``onnx_model`` (onnxruntime, CPU) and ``model`` (torch) on ``rows`` and compare."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_model, sess_options=options, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(rows, dtype=np.float32)
    ours = np.asarray(session.run([OUTPUT], {INPUT: x})[0])
    with torch.no_grad():
        theirs = model.eval()(torch.from_numpy(x)).numpy()
    return Agreement(
        rows=len(x),
        labels_equal=int((ours.argmax(axis=1) == theirs.argmax(axis=1)).sum()),
        max_abs_diff=float(np.abs(ours - theirs).max()) if len(x) else 0.0,
    )


def export_checked(model: nn.Module, schema: Schema, rows: np.ndarray) -> tuple[bytes, Agreement]:
    """:func:`export_onnx`, then :func:`onnx_agreement` on ``rows``.

    Raises:
        ExportMismatch: a label differs, or a logit by more than :data:`LOGIT_TOLERANCE`.
    """
    exported = export_onnx(model, schema)
    agreement = onnx_agreement(exported, model, rows)
    if not agreement.ok:
        raise ExportMismatch(
            f"the ONNX export disagrees with torch on {agreement.rows - agreement.labels_equal} of {agreement.rows} labels "
            f"(largest logit difference {agreement.max_abs_diff:.3g}); it was not written"
        )
    return exported, agreement
