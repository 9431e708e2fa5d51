"""The paper end to end: ``make reproduce`` / ``python -m molabench.reproduce budget=cpu tables=[2,4,5]``.

Three steps, each its own module:

- :mod:`~molabench.reproduce.plan` — every run each table needs at a budget (the table's sweep in
  ``configs/sweep/`` expanded by Hydra's own override parser, the budget's overrides, the stand-in
  data when a dataset is not at its root), each run's identity and whether its record is complete;
- :mod:`~molabench.reproduce.execute` — runs what is missing, one after another here (resumable:
  a run is found again by its identity) or submitted per table to a Hydra launcher (Slurm);
- :mod:`~molabench.reproduce.layout` — the paper's tables from the records of the planned runs:
  ``results/tables/table<N>_<name>.{json,md,csv,tex,png}``, rows in the paper's order.

The configuration is ``configs/reproduce/config.yaml`` with a ``budget`` group (``smoke``, ``cpu``,
``paper``).
"""
