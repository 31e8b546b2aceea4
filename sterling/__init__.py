"""Sterling's applications: the ``sterling`` CLI, ``sterling up``, the demo and the gateway with its UI.

This is the top layer (``docs/architecture.md``): it composes the services (``enclave_worker``'s
hosts, ``oracle``) over the SDK (``marketplace``) and the measured enclave code
(``enclave_worker.trusted``); nothing below imports it. The web UI's files ship inside it as
package data (``sterling/web``, the repository's ``web/`` folder).
"""
