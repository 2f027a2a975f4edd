"""``python -m cadence``: the same CLI as the ``cadence`` command (for an environment without the entry point)."""

from cadence.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
