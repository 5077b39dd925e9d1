import io
import os
import tarfile

import pytest

from nbcontainer import Engine
from nbcontainer.analysis import frames
from nbcontainer.notebook.widgets import LayerExplorer, LayerSizeChart, UnionMountView
from nbcontainer.oci import MT_OCI_LAYER, Descriptor, History, ImageConfig


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def engine(tmp_path):
    """An image of two layers: the top one overwrites etc/big (1000 bytes wasted) and whites out etc/gone."""
    e = Engine(tmp_path / "store")
    l0 = tar_bytes([("etc", None), ("etc/big", b"x" * 1000), ("etc/gone", b"g" * 10), ("etc/keep", b"k")])
    l1 = tar_bytes([("etc", None), ("etc/big", b"y" * 10), ("etc/.wh.gone", b"")])
    descs, diffs = [], []
    for data in (l0, l1):
        d = e.store.content.put(data)
        descs.append(Descriptor(MT_OCI_LAYER, d, len(data)))
        diffs.append(d)
    cfg = ImageConfig("amd64", created="2025-01-01T00:00:00Z", diff_ids=tuple(diffs),
                      history=(History(created_by="ADD base"), History(created_by="RUN shrink")))
    e.core.add_and_unpack(cfg, descs, "two:1", None)
    return e


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="unpacking a whiteout makes a char device: needs root")


@needs_root
def test_union_mount_view_tells_provider_and_shadowed_copies(engine):
    v = UnionMountView(engine, "two:1")
    v.path.value = "/etc/big"
    assert v.provider == 1
    assert [e.layer for e in v.shadowed] == [0]
    assert "comes from layer 1" in v.info.value and "shadowed by layer 1" in v.info.value
    v.path.value = "/etc/gone"
    assert v.provider is None and "deleted" in v.info.value
    v.path.value = "/etc/keep"
    assert v.provider == 0 and v.shadowed == []


@needs_root
def test_layer_explorer_counts_wasted_space_once(engine):
    x = LayerExplorer(engine, "two:1")
    assert int(x.wasted["size"].sum()) == 1010  # etc/big overwritten + etc/gone deleted
    assert x.efficiency == pytest.approx(1 - 1010 / 1021)
    x.layer.value = 1
    assert set(x.changes["kind"]) == {"modified", "whiteout"}
    assert "etc/.wh.gone" not in x.table.value and "/etc/gone" in x.table.value


@needs_root
def test_files_frame_marks_kinds_and_shadowing(engine):
    df = frames.to_frame("files", engine.files("two:1"))
    big = df[df["path"] == "/etc/big"].set_index("layer")
    assert big.loc[0, "shadowed"] and not big.loc[1, "shadowed"] and big.loc[1, "kind"] == "modified"
    assert df.loc[df["path"] == "/etc/gone", "kind"].tolist() == ["added", "whiteout"]


def test_layer_size_chart_is_a_figure_without_pyplot(engine):
    import sys

    chart = LayerSizeChart(engine, "two:1")
    assert len(chart.figure.axes[0].patches) == 2
    assert chart._repr_png_().startswith(b"\x89PNG")
    assert "matplotlib.pyplot" not in sys.modules
