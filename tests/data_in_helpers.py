"""A notebook folder with the inputs a training cell reads (CSV, .npz, PNG images, nested folders), and
the cell that reads them, for the data-in tests of both backends."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np


def png_bytes(width: int, height: int, value: int) -> bytes:
    """A real 8-bit grayscale PNG (every pixel ``value``), written without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([value]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def make_notebook_folder(folder: Path) -> Path:
    """``train.csv`` (64 rows: 4 features and a target), ``images/*.png`` (6 images),
    ``data/nested/arrays.npz`` (binary) and ``unrelated.txt`` (read by no cell)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4)).round(4)
    y = (x @ np.array([0.5, -1.0, 0.25, 2.0])).round(4)
    np.savetxt(folder / "train.csv", np.column_stack([x, y]), delimiter=",", fmt="%.4f")
    (folder / "images").mkdir(exist_ok=True)
    for i in range(6):
        (folder / "images" / f"img{i}.png").write_bytes(png_bytes(4, 4, 40 * i))
    (folder / "data" / "nested").mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data" / "nested" / "arrays.npz", scale=np.array([2.0]), offset=np.array([0.5]))
    (folder / "unrelated.txt").write_text("not read\n")
    return folder


def folder_state(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: relative path -> sha256 of its content (``dir`` for folders)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder)] = "dir"
        for f in filenames:
            p = Path(dirpath) / f
            out[os.path.relpath(p, folder)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# The training cell: reads every kind of input by the notebook's relative paths, trains on the CSV, and
# writes files of its own (one over an input's name), which must never reach the notebook's folder.
DATA_CELL = """\
import glob, os
import numpy as np
import tensorflow as tf

table = np.loadtxt("train.csv", delimiter=",", dtype="float32")
arrays = np.load("./data/nested/arrays.npz")
scale = float(arrays["scale"][0])
files = tf.data.Dataset.list_files("images/*.png", shuffle=False)
pixels = [int(tf.io.decode_png(tf.io.read_file(f))[0, 0, 0]) for f in files]
print("inputs:", table.shape, scale, sorted(pixels), len(glob.glob("images/*.png")))

x, y = table[:, :4], table[:, 4:] * scale
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)
model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(1)])
model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
model.fit(ds, epochs=3, steps_per_epoch=8, verbose=2)

with open("written-by-replica.txt", "w") as f:
    f.write("mine")
with open("train.csv", "w") as f:
    f.write("overwritten by the replica")
np.save("data/nested/out.npy", np.arange(3))
print("replica cwd:", os.getcwd())
"""
