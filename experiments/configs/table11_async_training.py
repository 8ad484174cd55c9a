"""Table 11 (appendix B): asynchronous training with 1 to 32 replicas.

ParameterServerStrategy: every worker is one replica running whole steps of the global batch (16)
and updating the parameter servers on its own; the 30K steps count the updates of all replicas, so
N replicas take 1/N of the time. The number of replicas is the cluster's (TF_CONFIG, or
`deeplab-local-cluster --num_workers=N`), not a config field.
"""

from experiments.configs import base

SETTINGS = {"parameter_server": {"train.strategy": "parameter_server"}}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting)
