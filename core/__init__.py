"""What every layer of gatecast shares: the bars contract and time conventions.

``core`` is the bottom layer: ``models``, ``strategies`` and ``pipelines`` may
import it, and it imports none of them (checked by the import-linter
contracts in ``pyproject.toml``).
"""
