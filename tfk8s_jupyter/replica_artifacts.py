"""The job's artifact directory on the replica side (``TFK8S_ARTIFACTS``): checkpoints, the trained model,
TensorBoard logs and ``artifacts.json``.

Part of the runner (see ``runner.py``); stdlib only at import, TensorFlow passed in; it travels with the
runner in the job's ConfigMap (``RUNNER_FILES``).
"""

from __future__ import annotations
