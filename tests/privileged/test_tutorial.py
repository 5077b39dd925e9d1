"""The Docker tutorial this project grew from, end to end, through the Engine API (root only)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and overlay mounts"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


def test_the_tutorial_run_change_find_commit_history_save_load_run(busybox_engine, tmp_path):
    e = busybox_engine
    c = e.run("busybox", ["sleep", "60"], detach=True, name="tut")
    r = e.exec("tut", ["sh", "-c", "echo this is a testfile > /tmp/testfile"])
    assert r.exit_code == 0
    data = e.inspect("tut")["GraphDriver"]["Data"]
    assert Path(data["UpperDir"], "tmp/testfile").read_text() == "this is a testfile\n"
    mounts = Path("/proc/mounts").read_text()
    assert f"overlay {data['MergedDir']} overlay" in mounts and f"upperdir={data['UpperDir']}" in mounts
    assert [(d.kind, d.path) for d in e.diff("tut")] == [("C", "/tmp"), ("A", "/tmp/testfile")]
    e.stop("tut", timeout=1)
    img = e.commit("tut", "testfile", message="added a test file")
    top = e.history("testfile")[0]
    assert top.id == img.id and top.created_by == "sleep 60" and top.comment == "added a test file"
    assert top.size == len("this is a testfile\n")
    archive = tmp_path / "testfile.tar"
    e.save("testfile", archive)
    e.rm("tut")
    e.rmi("testfile")
    assert [i.repository for i in e.images()] == ["busybox"]
    loaded = e.load(archive)
    assert [n for item in loaded for n in item.names] == ["docker.io/library/testfile:latest"]
    out = e.run("testfile", ["cat", "/tmp/testfile"], remove=True)
    assert out.exit_code == 0 and out.stdout == b"this is a testfile\n"
    assert c.id not in [s.id for s in e.runtime.list()]


def test_commit_turns_a_deleted_file_into_a_whiteout_entry_and_runs(busybox_engine):
    e = busybox_engine
    e.run("busybox", ["sh", "-c", "rm /etc/os-release; mkdir -p /data; echo x > /data/x"], name="del")
    img = e.commit("del", "deleted:1", changes=["CMD [\"ls\", \"/etc\"]", "ENV MODE=test"])
    import tarfile

    layer_blob = e.store.content.path(img.manifest.layers[-1].digest)
    with tarfile.open(layer_blob) as tar:
        names = tar.getnames()
    assert "etc/.wh.os-release" in names and "data/x" in names
    out = e.run("deleted:1", remove=True)
    assert b"os-release" not in out.stdout and b"passwd" in out.stdout
    assert "MODE=test" in e.image("deleted:1").config.config["Env"]
    e.rm("del")


def test_commit_of_the_same_changes_gives_the_same_diff_id(busybox_engine):
    e = busybox_engine
    ids = []
    for name in ("ca", "cb"):
        e.run("busybox", ["sh", "-c", "echo same > /same; touch -d @0 /same"], name=name)
        ids.append(e.commit(name, f"{name}:1").config.diff_ids[-1])
        e.rm(name)
    assert ids[0] == ids[1]


def test_cli_run_ps_logs_rm_as_separate_processes(busybox_engine):
    root = str(busybox_engine.root)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nbcontainer", "--root", root, *args],
                              capture_output=True, text=True, timeout=60, check=False)

    r = cli("run", "-d", "--name", "bg", "busybox", "sh", "-c", "echo started; sleep 30")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    ps = cli("ps")
    assert "bg" in ps.stdout and cid[:12] in ps.stdout and "Up " in ps.stdout
    assert cli("logs", "bg").stdout.strip() == "started"
    assert cli("--format", "json", "ps", "-a").stdout.count("\n") == 1
    top = cli("top", "bg")
    assert "sleep 30" in top.stdout and top.stdout.startswith("UID")
    assert cli("exec", "bg", "hostname").stdout.strip() == cid[:12]
    assert cli("stop", "-t", "1", "bg").returncode == 0
    assert "Exited (" in cli("ps", "-a").stdout
    r = cli("exec", "bg", "true")
    assert r.returncode == 1 and r.stderr.strip() == "Error: container bg is not running"
    assert cli("rm", "bg").returncode == 0
    r = cli("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert r.returncode == 3
    r = cli("run", "--rm", "busybox", "nosuchcmd")
    assert r.returncode == 127 and "executable file not found" in r.stderr
    assert cli("ps", "-a", "-q").stdout.strip() == ""


def test_export_writes_the_flattened_rootfs(busybox_engine, tmp_path):
    import tarfile

    e = busybox_engine
    e.run("busybox", ["sh", "-c", "echo hi > /hello; rm /etc/os-release"], name="ex")
    out = tmp_path / "rootfs.tar"
    e.export("ex", out)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert "hello" in names and "bin/busybox" in names and "etc/os-release" not in names
    assert not any(".wh." in n for n in names)
    e.rm("ex")


def test_inspect_container_is_docker_shaped(busybox_engine):
    e = busybox_engine
    e.run("busybox", ["sh", "-c", "exit 7"], name="ins")
    [obj] = json.loads(json.dumps([e.inspect("ins")]))
    assert obj["State"]["Status"] == "exited" and obj["State"]["ExitCode"] == 7
    assert obj["Name"] == "/ins" and obj["Path"] == "sh"
    assert set(obj["GraphDriver"]["Data"]) == {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}
    e.rm("ins")


def test_commit_squash_folds_the_image_into_one_layer(busybox_engine):
    e = busybox_engine
    e.run("busybox", ["sh", "-c", "echo s > /squashed; rm /etc/os-release"], name="sq")
    img = e.commit("sq", "squashed:1", squash=True)
    assert len(img.config.diff_ids) == 1
    rows = e.history("squashed:1")
    assert [r.empty_layer for r in rows] == [False, True, True]
    out = e.run("squashed:1", ["sh", "-c", "cat /squashed; ls /etc"], remove=True)
    assert out.stdout.startswith(b"s\n") and b"os-release" not in out.stdout and b"passwd" in out.stdout
    e.rm("sq")


def test_cli_run_it_gives_an_interactive_shell_in_a_terminal(busybox_engine):
    import pty
    import select
    import time

    pid, master = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "nbcontainer", "--root", str(busybox_engine.root),
                                  "run", "-it", "--rm", "busybox", "sh"])
    out = b""

    def read_until(marker: bytes, timeout: float) -> None:
        nonlocal out
        end = time.monotonic() + timeout
        while marker not in out and time.monotonic() < end:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    return

    read_until(b"/ # ", 20)
    os.write(master, b"stty size; echo hello-from-$((40+2)); exit 3\r")
    read_until(b"hello-from-42", 20)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert b"hello-from-42" in out and b"24 80" in out
    assert os.waitstatus_to_exitcode(status) == 3
    assert busybox_engine.ps(all=True) == []


def test_run_detached_with_rm_is_gone_once_it_has_exited(busybox_engine):
    e = busybox_engine
    c = e.run("busybox", ["sh", "-c", "exit 4"], detach=True, remove=True, name="gone")
    assert e.inspect("gone")["HostConfig"]["AutoRemove"] is True
    assert e.wait("gone") == 4
    assert [r.name for r in e.ps(all=True)] == []
    assert not (e.snapshots.overlay_dir / c.id).exists()


def test_df_counts_running_containers_and_their_upper_dirs(busybox_engine):
    e = busybox_engine
    e.run("busybox", ["sh", "-c", "head -c 5000 /dev/zero > /f; sleep 30"], detach=True, name="up")
    e.run("busybox", ["sh", "-c", "head -c 3000 /dev/zero > /g"], name="down")
    import time

    deadline = time.monotonic() + 5
    while not os.path.exists(os.path.join(e.inspect("up")["GraphDriver"]["Data"]["UpperDir"], "f")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rows = {r["TYPE"]: r for r in e.df()}
    assert rows["Containers"]["TOTAL"] == 2 and rows["Containers"]["ACTIVE"] == 1
    assert rows["Containers"]["SIZE"] >= 8000 and 3000 <= rows["Containers"]["RECLAIMABLE"] < 5000
    assert rows["Images"]["TOTAL"] == 1 and rows["Images"]["ACTIVE"] == 1
    e.rm("up", force=True)
    e.rm("down")


def test_run_flags_reach_the_container_and_its_cgroups(busybox_engine, tmp_path):
    e = busybox_engine
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\nFROM_FILE=yes\n")
    c = e.run("busybox", ["sleep", "30"], detach=True, name="flags", env=["A=1"], env_file=[str(env_file)],
              workdir="/tmp", user="nobody", hostname="box", cpus=0.5, memory="64m", pids_limit=50,
              entrypoint="")
    r = e.exec("flags", ["sh", "-c", "echo $A $FROM_FILE; pwd; id -u; hostname"])
    assert r.stdout.decode().split() == ["1", "yes", "/tmp", "65534", "box"]
    groups = c.cgroups
    cpu = next(p for k, p in groups.items() if k in ("cpu", "unified"))
    if os.path.exists(os.path.join(cpu, "cpu.cfs_quota_us")):
        quota = int(Path(cpu, "cpu.cfs_quota_us").read_text())
        period = int(Path(cpu, "cpu.cfs_period_us").read_text())
        assert quota / period == 0.5
    else:
        quota, period = Path(cpu, "cpu.max").read_text().split()
        assert int(quota) / int(period) == 0.5
    mem = groups.get("memory") or groups["unified"]
    limit_file = "memory.limit_in_bytes" if "memory" in groups else "memory.max"
    assert int(Path(mem, limit_file).read_text()) == 64 << 20
    pids = groups.get("pids") or groups["unified"]
    assert Path(pids, "pids.max").read_text().strip() == "50"
    e.rm("flags", force=True)
