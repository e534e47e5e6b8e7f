"""The ``tesla-mcast`` command line and its runners: the parser and dispatch
(:mod:`tesla.cli.main`), the ALC and NORM send/receive runners (:mod:`tesla.cli.run_alc`,
:mod:`tesla.cli.run_norm`) over the TESLA wiring (:mod:`tesla.cli.wiring`), ``demo``,
``keygen``, ``inspect`` and ``bench`` (with the NRL NORM ctypes peer it measures against,
:mod:`tesla.cli.nrl`).  ``python -m tesla.cli`` runs :func:`tesla.cli.main.main`."""
