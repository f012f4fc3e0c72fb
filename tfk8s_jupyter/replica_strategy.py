"""The job's one strategy, whatever strategy the cell constructs: adoption, or one clear refusal.

Cells written for ``TF_CONFIG`` clusters (TensorFlow's distributed tutorials, most existing code) build
their own strategy::

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    strategy = tf.distribute.ParameterServerStrategy(TFConfigClusterResolver(), variable_partitioner=p)

:class:`StrategyAdoption` patches TensorFlow's strategy classes so that constructing one in the cell gives
the job's strategy object (the one the runner made the default), configured with the arguments that change
training: ``variable_partitioner`` (parameter servers: applies to the variables created from then on) and
``communication_options`` / ``communication`` (all-reduce). So ``strategy.scope()``,
``tf.distribute.get_strategy()``, ``clear_session()``, ``Model.fit`` and ``ClusterCoordinator(strategy)``
all see that one strategy.

A cell that asks for what the job is not raises :class:`StrategyMismatch` at that line, in one sentence
naming what the cell asked, what the job is, and the flag that would match: all-reduce in a
parameter-server job or the reverse, ``MirroredStrategy`` / ``OneDeviceStrategy`` / the default strategy
(``experimental_set_strategy(None)``) in a multi-worker job, a cluster resolver whose cluster or task
disagrees with the job's, a second strategy with different training arguments.

Part of the runner (see ``runner.py``): ``tf`` is passed in. It travels with the runner in the job's
ConfigMap.
"""

from __future__ import annotations

import inspect

try:
    from tfk8s_jupyter.replica_env import ReplicaEnv
    from tfk8s_jupyter.replica_output import log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_env import ReplicaEnv  # type: ignore[no-redef]
    from replica_output import log  # type: ignore[no-redef]

ALL_REDUCE = "multi_worker_mirrored"
PARAMETER_SERVER = "parameter_server"
MIRRORED = "mirrored"
ONE_DEVICE = "one_device"

_ASKED = {
    ALL_REDUCE: "MultiWorkerMirroredStrategy (all-reduce across workers)",
    PARAMETER_SERVER: "ParameterServerStrategy (parameter servers)",
    MIRRORED: "MirroredStrategy (one machine's devices)",
    ONE_DEVICE: "OneDeviceStrategy (one device)",
    "default": "the default strategy (no distribution)",
}


class StrategyMismatch(RuntimeError):
    """The cell asks for a strategy that contradicts the job's: refused, never run alone."""


def job_description(renv: ReplicaEnv) -> str:
    workers = len(renv.cluster.get("worker", []))
    ps = len(renv.cluster.get("ps", []))
    if renv.strategy == PARAMETER_SERVER:
        return f"a parameter-server job ({ps} ps, {workers} worker(s) and a chief)"
    if renv.strategy == ALL_REDUCE:
        return f"an all-reduce job ({workers} workers, MultiWorkerMirroredStrategy)"
    return "a one-worker job (MirroredStrategy)"


def matching_flags(asked: str, renv: ReplicaEnv) -> str:
    """The ``%%tfk8s_train`` flags (``tk.submit`` arguments alike) of a job that would match ``asked``."""
    workers = max(2, len(renv.cluster.get("worker", [])))
    if asked == PARAMETER_SERVER:
        return f"--strategy parameter_server --ps 1 --workers {workers}"
    if asked == ALL_REDUCE:
        return f"--strategy multi_worker_mirrored --ps 0 --workers {workers}"
    return "--strategy mirrored --ps 0 --workers 1"


def _same(a, b) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return a == b or vars(a) == vars(b)
    except TypeError:
        return False


def _normalized_cluster(cluster) -> dict[str, list[str]]:
    out = {}
    for role, addrs in dict(cluster or {}).items():
        if isinstance(addrs, dict):  # sparse form {index: address}
            addrs = [addrs[k] for k in sorted(addrs)]
        if addrs:
            out[str(role)] = [str(a) for a in addrs]
    return out


class StrategyAdoption:
    """Makes the strategy classes the cell constructs give the job's ``strategy`` (see the module doc)."""

    def __init__(self, tf, renv: ReplicaEnv, strategy, reapply_default) -> None:
        self.tf = tf
        self.renv = renv
        self.strategy = strategy
        self.reapply_default = reapply_default
        self.adopted: dict | None = None  # the training arguments of the cell's first strategy
        self.original_set_strategy = tf.distribute.experimental_set_strategy
        self.kinds: dict[type, str] = {}

    # --- install
    def install(self) -> None:
        from tensorflow.python.distribute import (
            collective_all_reduce_strategy as cars,
        )
        from tensorflow.python.distribute import (
            mirrored_strategy,
            one_device_strategy,
            parameter_server_strategy_v2,
        )

        self.kinds = {
            cars.CollectiveAllReduceStrategy: ALL_REDUCE,
            cars._CollectiveAllReduceStrategyExperimental: ALL_REDUCE,
            parameter_server_strategy_v2.ParameterServerStrategyV2: PARAMETER_SERVER,
            mirrored_strategy.MirroredStrategy: MIRRORED,
            one_device_strategy.OneDeviceStrategy: ONE_DEVICE,
        }
        self.strategy._tfk8s_job_strategy = True
        for cls in self.kinds:
            if "_tfk8s_original_init" in vars(cls):
                continue
            self._patch_class(cls)
        adoption = self

        def experimental_set_strategy(strategy):
            adoption.check_set_strategy(strategy)
            return adoption.original_set_strategy(strategy)

        experimental_set_strategy.__doc__ = self.original_set_strategy.__doc__
        self.tf.distribute.experimental_set_strategy = experimental_set_strategy

    def _patch_class(self, cls) -> None:
        adoption = self
        original_init = cls.__init__
        cls._tfk8s_original_init = original_init
        signature = inspect.signature(original_init)

        def __new__(klass, *args, **kwargs):
            kind = adoption.kinds.get(klass)
            if kind is None:  # a subclass TensorFlow or a library defines: not the cell's ask
                return object.__new__(klass)
            try:
                bound = signature.bind(None, *args, **kwargs)
            except TypeError:
                bound = None
            arguments = dict(bound.arguments) if bound is not None else dict(kwargs)
            arguments.pop(next(iter(signature.parameters)), None)  # self
            return adoption.asked(kind, arguments)

        def __init__(self, *args, **kwargs):
            if getattr(self, "_tfk8s_job_strategy", False):
                return  # the job's strategy, given back by __new__: already set up
            original_init(self, *args, **kwargs)

        __init__.__doc__ = original_init.__doc__
        __init__.__wrapped__ = original_init
        cls.__new__ = staticmethod(__new__)
        cls.__init__ = __init__

    # --- the cell's asks
    def refuse(self, asked: str, detail: str = "") -> StrategyMismatch:
        what = _ASKED.get(asked, asked)
        fix = (
            f"submit it with {matching_flags(asked, self.renv)}"
            if asked in (ALL_REDUCE, PARAMETER_SERVER, MIRRORED)
            else "drop it: the job's strategy is already the default (tf.distribute.get_strategy())"
        )
        if asked in (ONE_DEVICE, "default") and self.renv.strategy != MIRRORED:
            fix += f", or submit with {matching_flags(MIRRORED, self.renv)} to train on one machine"
        return StrategyMismatch(
            f"this cell asks for {what}{detail}, but it runs in {job_description(self.renv)}; {fix}."
        )

    def asked(self, kind: str, arguments: dict):
        """The job's strategy for a cell that constructs a ``kind`` strategy with ``arguments``."""
        job = self.renv.strategy
        if kind != job:
            raise self.refuse(kind)
        self.check_resolver(kind, arguments.get("cluster_resolver"))
        wanted = self.training_arguments(kind, arguments)
        if self.adopted is None:
            self.apply(wanted)
            self.adopted = wanted
        else:
            for name, value in wanted.items():
                if value is None:
                    continue
                if (
                    name in self.adopted
                    and self.adopted[name] is not None
                    and not _same(self.adopted[name], value)
                ):
                    raise StrategyMismatch(
                        f"this cell builds a second {_ASKED[kind].split(' ')[0]} with a different {name} "
                        f"({value!r}) than its first ({self.adopted[name]!r}), but a job trains with one "
                        f"strategy; build the strategy once and reuse it (it runs in "
                        f"{job_description(self.renv)})."
                    )
                if self.adopted.get(name) is None:
                    self.apply({name: value})
                    self.adopted[name] = value
        self.reapply_default()
        return self.strategy

    def training_arguments(self, kind: str, arguments: dict) -> dict:
        if kind == PARAMETER_SERVER:
            return {"variable_partitioner": arguments.get("variable_partitioner")}
        if kind == ALL_REDUCE:
            options = arguments.get("communication_options")
            communication = arguments.get("communication")
            if communication is not None:
                options = self.tf.distribute.experimental.CommunicationOptions(implementation=communication)
            return {"communication_options": options}
        return {}

    def apply(self, wanted: dict) -> None:
        extended = self.strategy.extended
        partitioner = wanted.get("variable_partitioner")
        if partitioner is not None:
            extended._variable_partitioner = partitioner
            log(f"the job's ParameterServerStrategy uses the cell's variable_partitioner {partitioner!r}")
        options = wanted.get("communication_options")
        if options is not None:
            merged = extended._communication_options.merge(options)
            extended._communication_options = merged
            for name in ("_cross_device_ops", "_host_cross_device_ops"):
                ops = getattr(extended, name, None)
                if ops is not None and hasattr(ops, "_options"):
                    ops._options = merged
            log(f"the job's MultiWorkerMirroredStrategy uses the cell's communication options {merged!r}")

    def check_resolver(self, kind: str, resolver) -> None:
        if resolver is None:
            return
        try:
            theirs = _normalized_cluster(resolver.cluster_spec().as_dict())
        except Exception as exc:  # a resolver that cannot even say its cluster
            raise StrategyMismatch(
                f"this cell's cluster resolver ({type(resolver).__name__}) cannot give its cluster "
                f"({type(exc).__name__}: {exc}), but it runs in {job_description(self.renv)}; pass "
                "tf.distribute.cluster_resolver.TFConfigClusterResolver() or no resolver (the runner sets "
                "TF_CONFIG)."
            ) from None
        ours = _normalized_cluster((self.renv.tf_config or {}).get("cluster"))
        task = (getattr(resolver, "task_type", None), getattr(resolver, "task_id", None))
        want = (self.renv.role, self.renv.index)
        if theirs != ours or (task[0] is not None and (task[0], int(task[1] or 0)) != want):
            raise StrategyMismatch(
                f"this cell's cluster resolver describes cluster {theirs} as task {task[0]}:{task[1]}, but it "
                f"runs in {job_description(self.renv)} with cluster {ours} as {want[0]}:{want[1]}; pass "
                "tf.distribute.cluster_resolver.TFConfigClusterResolver() or no resolver (the runner sets "
                "TF_CONFIG for every replica)."
            )

    def check_set_strategy(self, strategy) -> None:
        if strategy is None or strategy is self.strategy:
            if strategy is None and self.renv.strategy in (ALL_REDUCE, PARAMETER_SERVER):
                raise self.refuse("default")
            return
        kind = next(
            (k for cls, k in self.kinds.items() if isinstance(strategy, cls)), type(strategy).__name__
        )
        if kind == self.renv.strategy:
            raise StrategyMismatch(
                f"this cell sets a second {type(strategy).__name__} as the default, but it runs in "
                f"{job_description(self.renv)} with one strategy; use the job's (tf.distribute.get_strategy())."
            )
        raise self.refuse(kind)
