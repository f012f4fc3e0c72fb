"""Tiny seeded training cells, run unchanged by the runner in tests (and reused by other test files).

Every cell fits a small MLP on synthetic regression data made with a fixed seed, so every MWMS worker
sees the same data, ``epochs=3, steps_per_epoch=20``: a few seconds of training on 2 cores.
"""

from __future__ import annotations

EPOCHS = 3
STEPS_PER_EPOCH = 20

_DATA = """\
import numpy as np
rng = np.random.default_rng(7)
x = rng.normal(size=(2048, 8)).astype("float32")
true_w = rng.normal(size=(8, 1)).astype("float32")
y = (x @ true_w + 0.1 * rng.normal(size=(2048, 1))).astype("float32")
"""

# `tf.keras` style.
TF_KERAS = (
    "import tensorflow as tf\n"
    + _DATA
    + """\
tf.keras.utils.set_random_seed(7)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
model = tf.keras.Sequential([
    tf.keras.Input(shape=(8,)),
    tf.keras.layers.Dense(16, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
history = model.fit(ds, epochs=3, steps_per_epoch=20)
print("cell done, losses:", [round(v, 4) for v in history.history["loss"]])
"""
)

# `import keras` style (functional model, from-imports).
KERAS = (
    _DATA
    + """\
import tensorflow as tf
import keras
from keras import layers

keras.utils.set_random_seed(7)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
inputs = keras.Input(shape=(8,))
hidden = layers.Dense(16, activation="relu")(inputs)
outputs = layers.Dense(1)(hidden)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse")
history = model.fit(ds, epochs=3, steps_per_epoch=20)
print("cell done, losses:", [round(v, 4) for v in history.history["loss"]])
"""
)

# `clear_session()` at the top, as notebooks often do: must still train distributed.
CLEAR_SESSION = "import tensorflow as tf\ntf.keras.backend.clear_session()\n" + TF_KERAS

# `keras.ops` is Keras 3 only: a parameter-server job must refuse it clearly.
KERAS3_ONLY = (
    _DATA
    + """\
import keras
scale = keras.ops.convert_to_tensor(2.0)
"""
)

# The user's own progress bar (verbose=1) must not corrupt the protocol stream.
VERBOSE1 = TF_KERAS.replace("steps_per_epoch=20)", "steps_per_epoch=20, verbose=1)")

# An exception on a known line of the cell.
RAISES = (
    "import tensorflow as tf\n"
    "x = 1\n"
    "def prepare(n):\n"
    "    raise ValueError(f'bad input shape {n}')\n"
    "prepare(3)\n"
)
RAISES_LINE = 4  # the innermost cell line: the `raise`

# Training that goes to NaN, with the built-in TerminateOnNaN (parameter-server logs are RemoteValues).
NAN_TERMINATES = TF_KERAS.replace(
    'loss="mse"', "loss=lambda a, b: tf.reduce_mean(tf.math.log(b - 1e9))"
).replace("steps_per_epoch=20)", "steps_per_epoch=20, callbacks=[tf.keras.callbacks.TerminateOnNaN()])")

# A model built in a thread the cell starts: no default strategy there, so fit() must refuse.
THREAD_MODEL = (
    "import threading\nimport tensorflow as tf\n"
    + _DATA
    + """\
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
holder = {}

def build():
    holder["model"] = tf.keras.Sequential([tf.keras.Input(shape=(8,)), tf.keras.layers.Dense(1)])

thread = threading.Thread(target=build)
thread.start()
thread.join()
model = holder["model"]
model.compile(optimizer="adam", loss="mse")
model.fit(ds, epochs=1, steps_per_epoch=5)
"""
)

# Crashes at the end of epoch 1 the first time it runs on a replica (marker file in the work dir's parent),
# so a relaunch resumes from the checkpoint.
CRASH_ONCE = TF_KERAS.replace(
    "history = model.fit(ds, epochs=3, steps_per_epoch=20)",
    """import os
marker = os.path.join(os.path.dirname(os.getcwd()), "crashed-" + os.environ["TFK8S_ROLE"] + os.environ["TFK8S_INDEX"])

class CrashOnce(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("simulated crash after epoch 1")

history = model.fit(ds, epochs=3, steps_per_epoch=20, callbacks=[CrashOnce()])""",
)

# ------------------------------------------------------------------------------------------------
# Cells as people write them (TensorFlow's distributed tutorials): their own strategy, TF_CONFIG, numpy
# inputs without steps, custom loops that report through tf.summary and report().

# numpy arrays with validation_split and no steps: under parameter servers too.
NUMPY_FIT = (
    "import tensorflow as tf\n"
    + _DATA
    + """\
tf.keras.utils.set_random_seed(7)
model = tf.keras.Sequential([
    tf.keras.Input(shape=(8,)),
    tf.keras.layers.Dense(16, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
history = model.fit(x, y, batch_size=64, epochs=3, validation_split=0.25)
print("val_loss:", [round(v, 4) for v in history.history["val_loss"]])
print("evaluate:", round(float(model.evaluate(x[:256], y[:256], batch_size=64, verbose=0)), 4))
print("predict:", model.predict(x[:5], verbose=0).shape)
"""
)

# multi_worker_with_keras: the cell builds its own MultiWorkerMirroredStrategy, with communication options.
OWN_MWMS = (
    "import json, os\nimport tensorflow as tf\n"
    + _DATA
    + """\
tf_config = json.loads(os.environ["TF_CONFIG"])
num_workers = len(tf_config["cluster"]["worker"])
options = tf.distribute.experimental.CommunicationOptions(
    implementation=tf.distribute.experimental.CommunicationImplementation.RING)
strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
assert tf.distribute.get_strategy() is strategy
tf.keras.utils.set_random_seed(7)
with strategy.scope():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(8,)),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
history = model.fit(ds, epochs=3, steps_per_epoch=20)
print("workers:", num_workers, "replicas:", strategy.num_replicas_in_sync,
      "implementation:", strategy.extended._communication_options.implementation.name)
"""
)

# parameter_server_training: its own resolver, strategy with a partitioner, scope, then fit.
OWN_PS = (
    "import tensorflow as tf\n"
    + _DATA
    + """\
cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(min_shard_bytes=64, max_shards=2)
strategy = tf.distribute.ParameterServerStrategy(cluster_resolver, variable_partitioner=partitioner)
assert tf.distribute.get_strategy() is strategy
tf.keras.utils.set_random_seed(7)
with strategy.scope():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(8,)),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
tf.keras.backend.clear_session()
assert tf.distribute.get_strategy() is strategy
coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
history = model.fit(x, y, batch_size=64, epochs=3)
kernel = model.layers[0].kernel
print("sharded:", type(kernel).__name__, len(getattr(kernel, "variables", [kernel])))
"""
)

# The same with no resolver and the experimental name.
OWN_PS_NO_RESOLVER = OWN_PS.replace(
    "tf.distribute.ParameterServerStrategy(cluster_resolver, variable_partitioner=partitioner)",
    "tf.distribute.experimental.ParameterServerStrategy(None)",
)

# parameter_server_training's custom loop: ClusterCoordinator.schedule/join/fetch over a per-worker dataset,
# metrics written with tf.summary.scalar (to the cell's own summary dir) and report().
PS_LOOP = (
    "import os\nimport tensorflow as tf\n"
    + _DATA
    + """\
from tfk8s_jupyter import report

EPOCHS, STEPS = 3, 20
cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
strategy = tf.distribute.experimental.ParameterServerStrategy(cluster_resolver)
coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)

def dataset_fn(input_context):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2048).repeat()
    return ds.batch(input_context.get_per_replica_batch_size(64))

@tf.function
def per_worker_dataset_fn():
    return strategy.distribute_datasets_from_function(dataset_fn)

per_worker_dataset = coordinator.create_per_worker_dataset(per_worker_dataset_fn)
per_worker_iterator = iter(per_worker_dataset)

with strategy.scope():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(8,)),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    optimizer = tf.keras.optimizers.legacy.Adam(0.01)
    loss_metric = tf.keras.metrics.Mean()

@tf.function
def step_fn(iterator):
    def replica_fn(batch):
        xb, yb = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        loss_metric.update_state(loss)
        return loss
    losses = strategy.run(replica_fn, args=(next(iterator),))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

writer = tf.summary.create_file_writer(os.path.join(os.getcwd(), "logs"))
with writer.as_default():
    for epoch in range(EPOCHS):
        loss_metric.reset_state()
        for i in range(STEPS):
            last = coordinator.schedule(step_fn, args=(per_worker_iterator,))
        coordinator.join()
        step = (epoch + 1) * STEPS
        tf.summary.scalar("loss", loss_metric.result(), step=step)
        report(step=step, last_batch_loss=last.fetch())
        print(f"epoch {epoch} loss {float(loss_metric.result()):.4f}")
writer.flush()
print("summary files:", len(os.listdir("logs")) > 0, "variables on:", model.trainable_variables[0].device)
"""
)

# multi_worker_with_ctl: its own strategy, distribute_datasets_from_function, strategy.run/reduce, the
# tutorial's chief/temp-dir checkpoint idiom with a CheckpointManager over CKPT_DIR (set by the test),
# report() every step. SLEEP seconds per step make it last (for kill tests).
MWMS_LOOP = """\
import json, os, time
import tensorflow as tf
import numpy as np
from tfk8s_jupyter import report

CKPT_DIR = {ckpt!r}
SLEEP = {sleep}
EPOCHS, STEPS, GLOBAL_BATCH = 3, 20, 64
rng = np.random.default_rng(7)
x = rng.normal(size=(2048, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1)).astype("float32")).astype("float32")

strategy = tf.distribute.MultiWorkerMirroredStrategy()
task_type, task_id = strategy.cluster_resolver.task_type, strategy.cluster_resolver.task_id
tf_config = json.loads(os.environ["TF_CONFIG"])
assert tf_config["task"] == {{"type": task_type, "index": task_id}}

def _is_chief(task_type, task_id):
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)

def write_filepath(filepath, task_type, task_id):
    dirpath, base = os.path.dirname(filepath), os.path.basename(filepath)
    if not _is_chief(task_type, task_id):
        dirpath = os.path.join(dirpath, "workertemp_" + str(task_id))
        os.makedirs(dirpath, exist_ok=True)
    return os.path.join(dirpath, base)

def dataset_fn(input_context):
    batch = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2048, seed=7).repeat().batch(batch)
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

with strategy.scope():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(8,)),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    optimizer = tf.keras.optimizers.Adam(0.01)
    epoch = tf.Variable(0, dtype=tf.int64)

iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

@tf.function
def train_step(iterator):
    def step_fn(inputs):
        xb, yb = inputs
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(model(xb, training=True) - yb), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    per_replica = strategy.run(step_fn, args=(next(iterator),))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
latest = tf.train.latest_checkpoint(CKPT_DIR)
if latest:
    checkpoint.restore(latest)
    print("restored epoch", int(epoch.numpy()))
manager = tf.train.CheckpointManager(
    checkpoint, directory=write_filepath(CKPT_DIR, task_type, task_id), max_to_keep=1)
while epoch.numpy() < EPOCHS:
    for i in range(STEPS):
        loss = train_step(iterator)
        report(step=int(epoch.numpy()) * STEPS + i + 1, loss=loss)
        time.sleep(SLEEP)
    epoch.assign_add(1)
    manager.save()
    print("epoch", int(epoch.numpy()), "loss", float(loss))
print("replicas:", strategy.num_replicas_in_sync)
"""

# PS_LOOP made to last (12 epochs, 0.5 s pause after each): for killing a worker mid-loop.
PS_LOOP_LONG = PS_LOOP.replace("EPOCHS, STEPS = 3, 20", "EPOCHS, STEPS = 12, 20").replace(
    "        coordinator.join()\n", "        coordinator.join()\n        __import__('time').sleep(0.5)\n"
)

# PS_LOOP_LONG with the cell's own tf.train.CheckpointManager over a directory it names (the test replaces
# CKPT_DIR_HERE): a restarted chief restores and resumes at the saved epoch.
PS_LOOP_CKPT = PS_LOOP_LONG.replace(
    "    for epoch in range(EPOCHS):\n",
    """    epoch_var = tf.Variable(0)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, directory="CKPT_DIR_HERE", max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        print("restored epoch", int(epoch_var.numpy()))
    while int(epoch_var.numpy()) < EPOCHS:
        epoch = int(epoch_var.numpy())
""",
).replace(
    "        __import__('time').sleep(0.5)\n",
    "        __import__('time').sleep(0.5)\n        epoch_var.assign_add(1)\n        manager.save()\n",
)

# MWMS_LOOP with the multi_worker_with_ctl tutorial's checkpoint dir: multiprocessing's per-process temp dir.
MWMS_LOOP_TUTORIAL_DIR = MWMS_LOOP.replace(
    "CKPT_DIR = {ckpt!r}\n",
    "from multiprocessing import util\nCKPT_DIR = os.path.join(util.get_temp_dir(), 'ckpt')\n",
)

# parameter_server_training's Model.fit section: a SimpleClusterResolver built from TF_CONFIG, a
# partitioner, DatasetCreator, steps_per_execution, and the tutorial's TensorBoard / ModelCheckpoint /
# BackupAndRestore callbacks in the absolute working dir it names (the test replaces WORKING_DIR_HERE).
PS_TUTORIAL_FIT = """\
import json, os
import tensorflow as tf

tf_config = json.loads(os.environ["TF_CONFIG"])
cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
    tf.train.ClusterSpec(tf_config["cluster"]), rpc_layer="grpc")
NUM_PS = len(tf_config["cluster"]["ps"])
variable_partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
    min_shard_bytes=(256 << 10), max_shards=NUM_PS)
strategy = tf.distribute.ParameterServerStrategy(cluster_resolver, variable_partitioner=variable_partitioner)

def dataset_fn(input_context):
    global_batch_size = 64
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    x = tf.random.uniform((10, 10))
    y = tf.random.uniform((10,))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(10).repeat()
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.batch(batch_size)
    dataset = dataset.prefetch(2)
    return dataset

dc = tf.keras.utils.experimental.DatasetCreator(dataset_fn)
with strategy.scope():
    model = tf.keras.models.Sequential([tf.keras.layers.Dense(10)])
model.compile(tf.keras.optimizers.legacy.SGD(), loss="mse", steps_per_execution=10)
working_dir = "WORKING_DIR_HERE"
log_dir = os.path.join(working_dir, "log")
ckpt_filepath = os.path.join(working_dir, "ckpt")
backup_dir = os.path.join(working_dir, "backup")
callbacks = [
    tf.keras.callbacks.TensorBoard(log_dir=log_dir),
    tf.keras.callbacks.ModelCheckpoint(filepath=ckpt_filepath),
    tf.keras.callbacks.BackupAndRestore(backup_dir=backup_dir),
]
model.fit(dc, epochs=5, steps_per_epoch=20, callbacks=callbacks)
print("tensorboard files:", sum(len(f) for _, _, f in os.walk(log_dir)) > 0)
"""

# multi_worker_with_keras's fault-tolerance section: BackupAndRestore in one directory (the test replaces
# BACKUP_DIR_HERE) that every worker shares; crashes once after epoch 1 like CRASH_ONCE, then resumes.
MWMS_TUTORIAL_BACKUP = OWN_MWMS.replace(
    "history = model.fit(ds, epochs=3, steps_per_epoch=20)",
    """marker = os.path.join(os.path.dirname(os.getcwd()), "crashed-" + os.environ["TFK8S_INDEX"])

class CrashOnce(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("simulated crash after epoch 1")

callbacks = [tf.keras.callbacks.BackupAndRestore(backup_dir="BACKUP_DIR_HERE"), CrashOnce()]
history = model.fit(ds, epochs=3, steps_per_epoch=20, callbacks=callbacks)""",
)

# multi_worker_with_ctl with the summaries written inside the step function (graph mode, the usual custom
# loop style): per-replica and reduced losses, at the optimizer's step, into each worker's own folder.
MWMS_GRAPH_SUMMARY = (
    MWMS_LOOP.replace(
        "        optimizer.apply_gradients(zip(grads, model.trainable_variables))\n        return loss\n"
        "    per_replica = strategy.run(step_fn, args=(next(iterator),))\n"
        "    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)\n",
        "        optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
        '        tf.summary.scalar("replica_loss", loss * GLOBAL_BATCH / tf.cast(tf.shape(xb)[0], tf.float32),'
        " step=optimizer.iterations)\n"
        "        return loss\n"
        "    per_replica = strategy.run(step_fn, args=(next(iterator),))\n"
        "    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)\n"
        '    tf.summary.scalar("loss", loss, step=optimizer.iterations)\n'
        "    return loss\n",
    )
    .replace(
        "        report(step=int(epoch.numpy()) * STEPS + i + 1, loss=loss)\n",
        "",
    )
    .replace(
        "while epoch.numpy() < EPOCHS:\n",
        'writer = tf.summary.create_file_writer(write_filepath(os.path.join(os.getcwd(), "logs"), task_type,'
        " task_id))\nwriter.set_as_default()\nwhile epoch.numpy() < EPOCHS:\n",
    )
)

# parameter_server_training's loop with its epoch summaries written by a tf.function the coordinator runs
# itself (reading the metric and the weights on the parameter servers), no report().
PS_GRAPH_SUMMARY = PS_LOOP.replace(
    "writer = tf.summary.create_file_writer(",
    "@tf.function\n"
    "def write_epoch_summary(step):\n"
    '    tf.summary.scalar("loss", loss_metric.result(), step=step)\n'
    '    tf.summary.scalar("weight_norm", tf.linalg.global_norm(model.trainable_variables), step=step)\n\n'
    "writer = tf.summary.create_file_writer(",
).replace(
    '        tf.summary.scalar("loss", loss_metric.result(), step=step)\n'
    "        report(step=step, last_batch_loss=last.fetch())\n",
    "        write_epoch_summary(tf.constant(step, tf.int64))\n",
)
