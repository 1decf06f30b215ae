"""Helpers the scenarios' testinfra tests share: on the verifier's path (PYTHONPATH in the shared Molecule
configuration), imported as `from bundletest import ...`."""
