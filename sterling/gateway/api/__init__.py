"""The gateway's HTTP API: dependencies and one router per resource."""
