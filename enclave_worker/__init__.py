"""Sterling enclave worker: the trusted part (``enclave_worker.trusted``, measured) and its untrusted host.

This file is imported when the trusted subprocess starts, so it is part of the measurement and
must stay free of imports.
"""
