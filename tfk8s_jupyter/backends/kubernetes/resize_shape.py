"""A resized job's shape on the cluster: what every kernel reads, and the new shape's creation undone when
the API server refuses part of it.

**The shape for other kernels.** A resize never rewrites the parent ConfigMap (the Role has no patch nor
update: nobody can rewrite another user's job in a shared namespace), so each resize creates a ConfigMap
``<job>-shape-<n>`` (``n``: the resize's place in the job's history, label :data:`LABEL_SHAPE`), owned by
the parent (deleted with it): its ``workers`` and the job's ``resize.json`` (history, removed workers, the
old runs' cuts) as they are after that resize. Reading a job folds the newest one into its parent
(:func:`with_shape`, as the ``<job>-outcome`` ConfigMap is folded by :func:`.job_objects.with_outcome`):
a kernel that adopts the job (another kernel or machine) gets the new worker count in its spec, and the
history; a record adopted before the resize is brought up to date when the job is listed
(:func:`refresh_record`).

**A refused new shape.** :func:`create_shape` creates the role Indexed Jobs (or the TFJob) of a shape, and
when the API server refuses one (admission, quota, a name taken: 409) deletes what it created before it:
nothing is left half-shaped. The restart then brings the old shape back from the same checkpoint
(:func:`restore_old_shape`), so the job goes on, and says so in one sentence among the status' notes.
"""

from __future__ import annotations

import json
from dataclasses import replace

from ...records import write_json_atomic
from ..base import JobConflict, TFK8sError
from . import manifests as m

LABEL_SHAPE = "tfk8s.io/shape"  # on a shape ConfigMap: the resize's place in the history (1, 2, ...)
RESIZE_FILE = "resize.json"  # in the job's record: its resizes (history, removed workers, old runs' cuts)
SHAPE_DATA = RESIZE_FILE  # in a shape ConfigMap: the job's resize.json after that resize


def shape_name(job_name: str, generation: int) -> str:
    return f"{job_name}-shape-{generation}"


def shape_selector(job_name: str) -> str:
    """The label selector of the job's shape ConfigMaps (not its data ConfigMaps, which may be large)."""
    return f"{m.job_selector(job_name)},{LABEL_SHAPE}"


def is_shape(cm: dict) -> bool:
    return LABEL_SHAPE in ((cm.get("metadata") or {}).get("labels") or {})


def generation(cm: dict) -> int:
    try:
        return int(cm["metadata"]["labels"][LABEL_SHAPE])
    except (KeyError, TypeError, ValueError):
        return 0


def note_shape(job, resizes: dict, workers: int) -> None:
    """Create the ConfigMap of the job's shape after its latest resize (``resizes``: its ``resize.json``),
    a dependent of the parent; a new object, never a patch. One already there (the same resize noted
    twice) stays."""
    gen = len(resizes.get("history") or [])
    if not gen:
        return
    try:
        parent = job.cluster.get("configmaps", job.namespace, job.name)
    except TFK8sError:
        return  # deleted meanwhile, or unreadable: nothing to note it on
    labels = {**m.job_labels(job.spec), LABEL_SHAPE: str(gen)}
    meta = {
        "name": shape_name(job.name, gen),
        "namespace": job.namespace,
        "labels": labels,
        "annotations": {m.ANNOTATION_OWNER: str(job.spec.owner)},
    }
    shared = {k: resizes[k] for k in ("history", "removed", "superseded") if k in resizes}
    data = {"workers": str(workers), SHAPE_DATA: json.dumps(shared)}
    obj = m.set_owner({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}, parent)
    try:
        job.cluster.create(job.namespace, obj)
    except JobConflict:
        pass
    except TFK8sError:
        pass  # the resize is done all the same; other kernels read the submitted shape until the next one


def with_shape(parent: dict, shapes: list[dict]) -> dict:
    """The parent as readers expect it (a copy): the newest shape's worker count in its ``spec.json`` and
    that shape's ``resize.json`` beside it; the parent itself when the job was never resized."""
    newest = max(shapes, key=generation, default=None)
    if newest is None:
        return parent
    data = dict(parent.get("data") or {})
    shape = newest.get("data") or {}
    try:
        spec = json.loads(data["spec.json"])
        spec["workers"] = int(shape["workers"])
        data["spec.json"] = json.dumps(spec)
    except (KeyError, TypeError, ValueError):
        return parent
    if SHAPE_DATA in shape:
        data[SHAPE_DATA] = shape[SHAPE_DATA]
    return {**parent, "data": data}


def fold_shapes(configmaps: list[dict]) -> list[dict]:
    """A list of jobs' ConfigMaps with each job's shape ConfigMaps folded into its parent
    (:func:`with_shape`) and left out of the list."""
    shapes: dict[str, list[dict]] = {}
    rest = []
    for cm in configmaps:
        if is_shape(cm):
            shapes.setdefault(cm["metadata"]["labels"].get(m.LABEL_JOB), []).append(cm)
        else:
            rest.append(cm)
    return [with_shape(cm, shapes.get(cm["metadata"]["name"], [])) for cm in rest]


def read_shaped_parent(cluster, namespace: str, name: str) -> dict:
    """The parent ConfigMap of job ``name`` with its shape folded in (two requests: get, list)."""
    parent = cluster.get("configmaps", namespace, name)
    return with_shape(parent, cluster.items("configmaps", namespace, label_selector=shape_selector(name)))


def refresh_record(record, parent: dict) -> bool:
    """Bring a record up to date with the shape folded into ``parent``, when the record has seen fewer
    resizes (it was adopted before them, elsewhere); returns whether it changed."""
    data = parent.get("data") or {}
    if SHAPE_DATA not in data or not record.exists():
        return False
    try:
        shared = json.loads(data[SHAPE_DATA])
        workers = json.loads(data["spec.json"])["workers"]
        local = json.loads((record.dir / RESIZE_FILE).read_text())
    except (OSError, ValueError):
        local = {"history": [], "removed": []}
    except (KeyError, TypeError):
        return False
    if len(shared.get("history") or []) <= len(local.get("history") or []):
        return False
    spec = record.read_spec()
    spec["workers"] = workers
    record.write_spec(spec)
    write_json_atomic(record.dir / RESIZE_FILE, {**local, **shared})
    return True


def adopt_shape(parent: dict, record) -> None:
    """A record adopted from ``parent`` (:func:`with_shape` folded): the job's resizes written beside its
    spec, so its history and removed workers show."""
    data = parent.get("data") or {}
    if SHAPE_DATA in data:
        try:
            write_json_atomic(record.dir / RESIZE_FILE, json.loads(data[SHAPE_DATA]))
        except ValueError:
            pass


# creating a shape -----------------------------------------------------------------------------------
class ShapeRefused(TFK8sError):
    """The API server refused an object of the new shape; what was created before it is deleted."""

    def __init__(self, what: str, cause: TFK8sError, left: list[str]):
        self.what, self.cause, self.left = what, cause, left
        super().__init__(f"the API server refused to create {what}: {cause}")


def create_shape(job, data_volumes: int, resume: str) -> None:
    """Create the role Indexed Jobs (or the TFJob) of ``job.spec``'s shape, owned by the parent.

    Raises:
        ShapeRefused: one was refused; those created before it are deleted (``left``: what could not be).
    """
    from .lifecycle import delete_object

    spec, namespace = job.spec, job.namespace
    parent = job.cluster.get("configmaps", namespace, job.name)
    if job.flavor == "tfjob":
        objs = [m.tfjob(spec, namespace, data_volumes, resume)]
    else:
        objs = [m.indexed_job(spec, r.role, r.count, namespace, data_volumes, resume) for r in spec.replicas]
    created: list[dict] = []
    for obj in objs:
        try:
            created.append(job.cluster.create(namespace, m.set_owner(obj, parent)))
        except TFK8sError as e:
            left = []
            for done in reversed(created):
                kind, name = done["kind"], done["metadata"]["name"]
                try:
                    delete_object(job.cluster, kind, name, namespace)
                except TFK8sError:
                    left.append(f"{kind} {name}")
            raise ShapeRefused(f"{obj['kind']} {obj['metadata']['name']}", e, left) from e


def _reason(e: TFK8sError, short: bool = False) -> str:
    """The refusal in words (``short``: its first clause, what happened without the advice)."""
    text = " ".join(str(e).split())
    if short:
        text = text.split("; ", 1)[0]
    return text[:300].rstrip(" .;")


def restore_old_shape(
    restart, fol, refused: ShapeRefused, before, removed_before: list[str], data_volumes: int, resume: str
):
    """After the new shape was refused (nothing of it left): the record says the old shape again, the old
    shape's objects are created from the same checkpoint, and the status' notes say in one sentence what
    failed and what to do. Returns the job with the old spec.

    Raises:
        TFK8sError: the old shape could not be brought back either (one sentence with the fix).
    """
    job, resize = restart.job, restart.resize
    old = replace(job, spec=before)
    with fol.events_lock:
        job.record.write_spec(before.to_json())
        fol.reshape(before)
    restart.job = old
    try:
        resizes = json.loads((job.record.dir / RESIZE_FILE).read_text())
    except (OSError, ValueError):
        resizes = {"history": [], "removed": []}
    if resizes.get("history"):
        resizes["history"][-1]["failed"] = _reason(refused)
        resizes["history"][-1]["restored"] = before.workers
    resizes["removed"] = list(removed_before)
    where = f" (epoch {resize.epoch})" if resize.epoch is not None else ""
    resizes["error"] = (
        f"the resize to {resize.workers} worker(s) failed because {_reason(refused, short=True)}, so the job "
        f"went on with its {before.workers} worker(s) from the same checkpoint{where}; fix that and resize again."
    )
    write_json_atomic(job.record.dir / RESIZE_FILE, resizes)
    if refused.left:
        raise TFK8sError(
            f"the API server refused to create {refused.what} and {', '.join(refused.left)} of the new shape "
            f"could not be deleted; delete them with kubectl delete -n {job.namespace} -l "
            f"{m.job_selector(job.name)} jobs,tfjobs, then submit the job again with resume_from={job.name!r}."
        )
    restart.wait_gone()  # the deleted objects' pods gone: the old shape's Jobs take the same names
    try:
        create_shape(old, data_volumes, resume)
    except ShapeRefused as e:
        raise TFK8sError(
            f"{_reason(refused)}, and bringing back its {before.workers} worker(s) failed too ({_reason(e)}); "
            f"submit the job again with resume_from={job.name!r}."
        ) from e
    return old
