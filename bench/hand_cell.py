"""A cell run as a script, the way TensorFlow's tutorials launch one per machine: TF_CONFIG by hand, then
the cell's own code (which builds its own strategy). The baseline of ``bench_cells.py``; no tfk8s runner."""

from __future__ import annotations

import json
import os
import sys

role = os.environ["TFK8S_ROLE"]
index = int(os.environ["TFK8S_INDEX"])
cluster = json.loads(os.environ["TFK8S_CLUSTER"])
os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": role, "index": index}})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"
with open(os.environ["TFK8S_PAYLOAD"]) as f:
    code = json.load(f)["code"]
exec(compile(code, "<cell>", "exec"), {"__name__": "__main__"})
sys.stdout.flush()
os._exit(0)
