import os
import stat

import pytest

from nbcontainer.analysis.union import merged, union
from nbcontainer.layers import upper_changes

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are char devices 0/0: mknod needs root")


def build(base, spec):
    for rel, kind in spec:
        p = os.path.join(base, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if kind == "dir":
            os.makedirs(p, exist_ok=True)
        elif kind == "opaque":
            os.makedirs(p, exist_ok=True)
            os.setxattr(p, "trusted.overlay.opaque", b"y")
        elif kind == "whiteout":
            os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        else:
            with open(p, "w") as f:
                f.write(kind)


@root_only
def test_union_tells_which_layer_provides_and_what_is_shadowed(tmp_path):
    l0, l1, l2 = (str(tmp_path / n) for n in ("l0", "l1", "l2"))
    build(l0, [("etc/a", "a0"), ("etc/b", "b0"), ("data/x", "x0"), ("data/y", "y0")])
    build(l1, [("etc/a", "a1"), ("etc/b", "whiteout"), ("data", "opaque"), ("data/z", "z1")])
    build(l2, [("etc/c", "c2")])
    layers = union([l0, l1, l2])
    by = {(e.layer, e.path): e for entries in layers for e in entries}
    assert by[(0, "/etc/a")].shadowed_by == 1 and by[(1, "/etc/a")].kind == "modified"
    assert by[(0, "/etc/b")].shadowed_by == 1 and by[(1, "/etc/b")].kind == "whiteout"
    assert by[(0, "/data/x")].shadowed_by == 1
    assert by[(2, "/etc/c")].kind == "added"
    view = merged([l0, l1, l2])
    assert view["/etc/a"].layer == 1 and "/etc/b" not in view
    assert sorted(p for p in view if p.startswith("/data/")) == ["/data/z"]
    assert view["/etc"].layer == 2


@root_only
def test_diff_reports_parents_of_changes_as_changed(tmp_path):
    lower, upper = str(tmp_path / "lower"), str(tmp_path / "upper")
    build(lower, [("tmp/keep", "k"), ("etc/passwd", "p"), ("etc/old", "o")])
    build(upper, [("tmp/testfile", "this is a testfile\n"), ("etc/old", "whiteout"), ("new/dir/f", "n")])
    rows = {(r.kind, r.path) for r in upper_changes(upper, [lower])}
    assert rows == {("C", "/tmp"), ("A", "/tmp/testfile"), ("C", "/etc"), ("D", "/etc/old"),
                    ("A", "/new"), ("A", "/new/dir"), ("A", "/new/dir/f")}


def test_a_middle_layer_that_replaced_a_dir_hides_its_old_contents_from_export_and_the_union(tmp_path):
    """L1 foo/secret, L2 foo (a file: the dir was deleted), L3 foo/new: overlay shows only foo/new."""
    import io
    import tarfile

    from nbcontainer.analysis.union import merged
    from nbcontainer.layers import write_flat_tar

    l1, l2, l3 = (tmp_path / n for n in ("l1", "l2", "l3"))
    (l1 / "foo").mkdir(parents=True)
    (l1 / "foo" / "secret").write_text("deleted on purpose\n")
    l2.mkdir()
    (l2 / "foo").write_text("not a dir any more\n")
    (l3 / "foo").mkdir(parents=True)
    (l3 / "foo" / "new").write_text("new\n")
    view = merged([str(l1), str(l2), str(l3)])
    assert "/foo/new" in view and "/foo/secret" not in view
    buf = io.BytesIO()
    write_flat_tar([str(l3), str(l2), str(l1)], buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        names = {m.name.removeprefix("./").rstrip("/") for m in tar}
    assert "foo/new" in names and "foo/secret" not in names
