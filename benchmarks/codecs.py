"""``codecs``: write / read throughput of the library and raw zarr per codec and chunk length.

One day of the main dataset for each cell of ``codec_matrix`` x ``chunk_matrix``;
the note gives the compression ratio measured on disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import dask_zcollection as dzc

from . import _data
from ._context import Context
from ._core import Config, Measurement, Result, timed

__all__ = ["measurements"]


def m_codec_cell(codec: str, chunks: int) -> Callable[[Context], list[Result]]:
    def fn(ctx: Context) -> list[Result]:
        rows = min(ctx.cfg.matrix_rows, ctx.cfg.rows)
        cols = {k: v[:rows] for k, v in ctx.columns.items()}
        mb = sum(v.nbytes for v in cols.values()) / 1e6
        schema = ctx.schema(codec, chunks)
        base = ctx.path("codecs", f"{codec}-{chunks}")
        url, zroot = "file://" + os.path.join(base, "dzc"), os.path.join(base, "zarr")

        def clear() -> None:
            shutil.rmtree(base, ignore_errors=True)

        r = ctx.cfg.repeats
        w_dzc = timed(lambda: ctx.write_dzc(url, cols, schema), r, setup=clear)
        w_zarr = timed(
            lambda: _data.zarr_write(zroot, cols, codec, chunks),
            r,
            setup=lambda: shutil.rmtree(zroot, ignore_errors=True),
        )
        stored = _data.du(zroot)
        r_dzc = timed(lambda: dzc.open_collection(url).query(), r)
        r_zarr = timed(lambda: _data.zarr_read_all(zroot), r)
        clear()
        tag = f"codec[{codec},{chunks}]"
        note = f"{mb:,.0f} MB, ratio {mb * 1e6 / stored:.2f}"
        return [
            Result(
                f"{tag}.write",
                "codecs",
                "MB/s",
                {"dzc": w_dzc.inverse(mb), "zarr": w_zarr.inverse(mb)},
                note=note,
                lower_is_better=False,
                params={"codec": codec, "chunks": chunks},
            ),
            Result(
                f"{tag}.read",
                "codecs",
                "MB/s",
                {"dzc": r_dzc.inverse(mb), "zarr": r_zarr.inverse(mb)},
                note=note,
                lower_is_better=False,
                params={"codec": codec, "chunks": chunks},
            ),
        ]

    return fn


def measurements(cfg: Config) -> list[Measurement]:
    """One measurement per codec x chunk length, each a write and a read row."""
    return [
        Measurement(
            f"codec[{c},{ch}]",
            "codecs",
            m_codec_cell(c, ch),
            rows=(f"codec[{c},{ch}].write", f"codec[{c},{ch}].read"),
        )
        for c in cfg.codec_matrix
        for ch in cfg.chunk_matrix
    ]
