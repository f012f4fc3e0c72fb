"""``%tfk8s_pool``: the local backend's warm replica pool (processes with TensorFlow imported, waiting to
become the replicas of a new job) and its kept replicas (a finished job's processes, waiting for the next
run of the same shape); ``%tfk8s_pool --stop`` ends this kernel's idle and kept ones.

Registered beside the other magics by ``%load_ext tfk8s_jupyter`` (``PoolMagics(ipython)``).
"""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .magic_args import parse_magic_line


def pool_table(root) -> str:
    """The pool and the kept replicas under the records root ``root`` as text: one line per process."""
    from .backends.local_keep import list_kept
    from .backends.local_pool import list_pool

    rows = list_pool(root) + list_kept(root)
    if not rows:
        return (
            "tfk8s: the warm pool is empty (it fills after a local job starts; c.TFK8s.warm_pool sizes it) "
            "and no replicas are kept (a succeeded job's stay c.TFK8s.keep_warm seconds for the next run "
            "of its shape)."
        )
    lines = [f"{'PID':>7}  {'STATE':<8}  {'KERAS':<8}  {'RSS':>7}  {'AGE':>7}  {'OWNER':>7}  JOB"]
    for r in rows:
        rss = f"{r['rss'] / 2**20:.0f} MB" if r["rss"] else "-"
        lines.append(
            f"{r['pid']:>7}  {r['state']:<8}  {r['keras'] or '?':<8}  {rss:>7}  {r['age']:>6.0f}s  "
            f"{r['owner']:>7}  {r['job'] or ''}"
        )
    return "\n".join(lines)


@magics_class
class PoolMagics(Magics):
    @magic_arguments()
    @argument(
        "--stop", action="store_true", help="End this kernel's idle warm processes and kept replicas now."
    )
    @line_magic
    def tfk8s_pool(self, line: str):
        """Show the warm replica pool and the kept replicas of the local backend, or end this kernel's.

        The pool refills after each local launch (``c.TFK8s.warm_pool``: None = the last job's shape,
        0 = off); an idle process exits after ``c.TFK8s.warm_pool_idle`` seconds or with this kernel. A
        succeeded job's replicas are kept for ``c.TFK8s.keep_warm`` seconds (0 = off) and run the next job
        of the same shape.

        Examples::

            %tfk8s_pool
            %tfk8s_pool --stop
        """
        import os

        from .backends.local_keep import stop_kept
        from .backends.local_pool import owned_pool
        from .records import records_root

        args = parse_magic_line(self.tfk8s_pool, line)
        root = records_root()
        if args.stop:
            count = owned_pool(root).stop()
            kept = stop_kept(root, owner=os.getpid())
            print(f"tfk8s: stopped {count} idle warm process(es) and {kept} kept replica(s) of this kernel.")
            return
        pool = owned_pool(root)
        print(pool_table(root))
        if pool.note:
            print(f"tfk8s: {pool.note}")


def register(ipython) -> None:
    """Add ``%tfk8s_pool`` to ``ipython`` (called by ``load_ipython_extension``)."""
    ipython.register_magics(PoolMagics(ipython))
