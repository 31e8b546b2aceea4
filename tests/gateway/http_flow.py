"""The gateway tests use the package's HTTP client of the gateway (what the browser does, in Python)."""

from marketplace.gateway_client import create_job_over_http, list_dataset_over_http, rpc, send_transaction

__all__ = ["create_job_over_http", "list_dataset_over_http", "rpc", "send_transaction"]
