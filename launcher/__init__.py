"""launcher: one YAML recipe, one command, the same run on a laptop, a GPU node or a SLURM allocation.

The data flows recipe -> plan -> backend -> ranks, one subpackage each:
``launcher.recipe`` (schema, loading), ``launcher.plan`` (pure resolution), ``launcher.backends``
(where it runs) and ``launcher.ranks`` (what runs inside every training process).
"""

__version__ = "0.1.0"
