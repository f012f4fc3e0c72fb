"""``%tfk8s_pool``: the local backend's warm replica pool (processes with TensorFlow imported, waiting to
become the replicas of a new job); ``%tfk8s_pool --stop`` ends this kernel's idle ones.

Registered beside the other magics by ``%load_ext tfk8s_jupyter`` (``PoolMagics(ipython)``).
"""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .magic_args import parse_magic_line


def pool_table(root) -> str:
    """The pool under the records root ``root`` as text: one line per process."""
    from .backends.local_pool import list_pool

    rows = list_pool(root)
    if not rows:
        return (
            "tfk8s: the warm pool is empty (it fills after a local job starts; c.TFK8s.warm_pool sizes it)."
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
    @argument("--stop", action="store_true", help="End this kernel's idle warm processes now.")
    @line_magic
    def tfk8s_pool(self, line: str):
        """Show the warm replica pool of the local backend, or end this kernel's idle processes.

        The pool refills after each local launch (``c.TFK8s.warm_pool``: None = the last job's shape,
        0 = off); an idle process exits after ``c.TFK8s.warm_pool_idle`` seconds or with this kernel.

        Examples::

            %tfk8s_pool
            %tfk8s_pool --stop
        """
        from .backends.local_pool import owned_pool
        from .records import records_root

        args = parse_magic_line(self.tfk8s_pool, line)
        root = records_root()
        if args.stop:
            count = owned_pool(root).stop()
            print(f"tfk8s: stopped {count} idle warm process(es) of this kernel.")
            return
        pool = owned_pool(root)
        print(pool_table(root))
        if pool.note:
            print(f"tfk8s: {pool.note}")


def register(ipython) -> None:
    """Add ``%tfk8s_pool`` to ``ipython`` (called by ``load_ipython_extension``)."""
    ipython.register_magics(PoolMagics(ipython))
