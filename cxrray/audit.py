"""``python -m cxrray.audit``: the same command as ``cxrray audit`` (``cxrray.studies.audit``)."""

from cxrray.studies.audit import main

if __name__ == "__main__":
    raise SystemExit(main())
