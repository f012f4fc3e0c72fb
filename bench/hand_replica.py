"""A replica launched by hand, the way one would without tfk8s: the baseline of ``bench_engine.py``.

TF_CONFIG from the same cluster, role and index; the strategy; the cell run under ``strategy.scope()``.
No protocol, no metrics callback, no checkpoints, no watchdog (the bench kills ps and workers).
The Keras choice is the runner's (tf_keras with parameter servers, Keras 3 with all-reduce, including the
Keras 3 multi-worker fix without which Keras 3 cannot train there at all), so the two sides run the
same training code.
"""

from __future__ import annotations

import json
import os
import sys

role = os.environ["TFK8S_ROLE"]
index = int(os.environ["TFK8S_INDEX"])
strategy_name = os.environ["TFK8S_STRATEGY"]
cluster = json.loads(os.environ["TFK8S_CLUSTER"])
os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": role, "index": index}})
if strategy_name == "parameter_server":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["GRPC_FAIL_FAST"] = "use_caller"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

if strategy_name == "parameter_server":
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if role != "chief":
        tf.distribute.Server(
            resolver.cluster_spec(), job_name=role, task_index=index, protocol="grpc", start=True
        ).join()
    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
else:
    from tfk8s_jupyter.replica_keras import patch_keras3_multi_worker

    patch_keras3_multi_worker(tf)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

with open(os.environ["TFK8S_PAYLOAD"]) as f:
    code = json.load(f)["code"]
with strategy.scope():
    exec(compile(code, "<cell>", "exec"), {"__name__": "__main__"})
sys.stdout.flush()
os._exit(0)
