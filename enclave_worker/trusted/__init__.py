"""The trusted (measured) part of the Sterling enclave worker.

Runs as its own process behind a narrow message interface (:mod:`.protocol`), and imports nothing
from Sterling's untrusted packages, so its measurement covers exactly the code it runs.
"""
