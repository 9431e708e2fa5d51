"""molabench: training one model on heterogeneous data (several domains or tasks at once).

The layout mirrors the architecture:

- ``data``           datasets as in-memory or on-disk multi-task splits, batch loaders
- ``models``         backbones (by name), heads, MoLA adapters and routers
- ``architectures``  how parameters are shared between tasks (Single-Task, HPS, MoLA, MMoE, ...)
- ``weighting``      how task losses / gradients are combined (EW, PCGrad, MGDA, ...)
- ``penalties``      extra loss terms (TwD, domain-generalisation penalties)
- ``engine``         the algorithm contract (update / predict), trainer, evaluation, selection
- ``report``         run records, aggregation into tables, the paper's numbers
"""

__version__ = "0.1.0"
