"""The runtime against the real kernel: namespaces, overlay, cgroups, lifecycle, survival."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from nbcontainer.errors import AlreadyExistsError, InvalidArgumentError, StateTransitionError
from nbcontainer.runtime import RunResult, cgroups
from nbcontainer.runtime.bundle import Volume

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and overlay mounts")


def run(store, *args: str, **kw) -> RunResult:
    result = store.runtime.run(store.make_spec(*args, **kw))
    assert isinstance(result, RunResult)
    return result


def sh(store, script: str, **kw) -> RunResult:
    return run(store, "sh", "-c", script, **kw)


def host_mounts() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def test_pid_1_is_the_command(store):
    assert sh(store, "echo $$").stdout == b"1\n"


def test_hostname_is_set(store):
    assert sh(store, "hostname", hostname="box1").stdout == b"box1\n"


def test_hostname_defaults_to_short_id(store):
    spec = store.make_spec("hostname")
    assert store.runtime.run(spec).stdout == spec.id[:12].encode() + b"\n"


def test_container_sees_only_its_own_processes_and_files(store):
    res = sh(store, "ps -o pid,comm; ls /proc | grep -c '^[0-9]'; ls /work/main 2>&1; echo done")
    lines = res.stdout.decode().splitlines()
    pids = [line.split()[0] for line in lines[1:] if line.split()[0].isdigit() and len(line.split()) == 2]
    assert set(pids) <= {"1", "2", "3", "4", "5"}, res.stdout
    assert int(lines[len(pids) + 1]) <= 4, res.stdout
    assert "No such file or directory" in res.stdout.decode()


def test_overlay_shows_on_host_while_running_and_is_gone_after_delete(store):
    spec = store.make_spec("sleep", "30")
    store.runtime.run(spec, detach=True)
    merged = spec.merged
    line = next(line for line in host_mounts().splitlines() if f" {merged} " in line)
    assert " - overlay overlay " in line
    for opt in ("lowerdir=", "upperdir=", "workdir="):
        assert opt in line
    store.runtime.kill(spec.id)
    assert store.runtime.wait(spec.id) == 137
    store.runtime.delete(spec.id)
    assert f" {merged} " not in host_mounts()
    assert not (store.root / "containers" / spec.id).exists()


def test_file_written_inside_appears_in_upper_dir(store):
    spec = store.make_spec("sh", "-c", "echo hello > /tmp/greeting")
    assert store.runtime.run(spec).exit_code == 0
    upper = store.snapshotter.container_layer(spec.id).upper
    assert (upper / "tmp" / "greeting").read_text() == "hello\n"


def test_top_lists_the_process_with_host_pids(store):
    spec = store.make_spec("sleep", "30")
    st = store.runtime.run(spec, detach=True)
    rows = store.runtime.top(spec.id)
    assert [r["PID"] for r in rows] == [st.pid]
    assert rows[0]["CMD"] == "sleep 30"
    assert set(rows[0]) == {"UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"}
    assert rows[0]["UID"] == "root"


def _count_state_calls(monkeypatch, runtime) -> list[str]:
    calls: list[str] = []
    state = runtime.state

    def counted(id: str):
        calls.append(id)
        return state(id)

    monkeypatch.setattr(runtime, "state", counted)
    return calls


def test_run_computes_the_state_at_most_twice(store, monkeypatch):
    calls = _count_state_calls(monkeypatch, store.runtime)
    res = sh(store, "echo out; echo err >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr, res.oom_killed) == (3, b"out\n", b"err\n", False)
    assert len(calls) <= 2, calls
    calls.clear()
    spec = store.make_spec("sleep", "30")
    st = store.runtime.run(spec, detach=True)
    assert (st.status, st.id) == ("running", spec.id) and st.pid > 0
    assert len(calls) <= 2, calls


def test_attach_relays_the_pty_sized_before_start(store):
    spec = store.make_spec("sh", "-c", "stty size; read line; echo got $line", tty=True, attach=True,
                           tty_size=(33, 101))
    store.runtime.create(spec)
    sock = store.runtime.attach(spec.id)
    try:
        store.runtime.start(spec.id)
        sock.sendall(b"hi\n")
        sock.settimeout(10)
        seen = b""
        while b"got hi" not in seen:
            chunk = sock.recv(4096)
            if not chunk:
                break
            seen += chunk
    finally:
        sock.close()
    assert b"33 101" in seen and b"got hi" in seen, seen
    assert store.runtime.wait(spec.id, timeout=10) == 0


def test_exit_code_propagates(store):
    assert sh(store, "exit 42").exit_code == 42


def test_stdout_and_stderr_are_separated_and_logged(store):
    spec = store.make_spec("sh", "-c", "echo out; echo err >&2; printf tail")
    res = store.runtime.run(spec)
    assert (res.stdout, res.stderr) == (b"out\ntail", b"err\n")
    assert list(store.runtime.logs(spec.id, tail=1)) == [("stdout", b"tail")]


def test_command_not_found_exits_127_with_dockers_message(store):
    res = run(store, "nosuchcmd")
    assert res.exit_code == 127
    assert b'exec: "nosuchcmd": executable file not found in $PATH' in res.stderr


def test_memory_limit_oom_kill_exits_137(store):
    res = sh(store, "x=0123456789; while :; do x=$x$x; done", memory=16 * 1024 * 1024)
    assert res.exit_code == 137
    assert res.oom_killed


def test_pids_limit_contains_a_fork_bomb(store):
    start = time.monotonic()
    res = sh(store, "for i in $(seq 50); do sleep 5 & done; wait; echo finished", pids_limit=20)
    assert b"can't fork" in res.stderr or b"Resource temporarily unavailable" in res.stderr, res.stderr
    assert time.monotonic() - start < 30
    assert subprocess.run(["true"], timeout=5, check=False).returncode == 0  # the host still forks


def test_default_capabilities_without_no_new_privs_as_docker(store):
    res = sh(store, "grep -E '^(CapInh|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status")
    assert res.stdout.decode().split() == [
        "CapInh:", "0000000000000000", "CapEff:", "00000000a80425fb", "CapBnd:", "00000000a80425fb",
        "CapAmb:", "0000000000000000", "NoNewPrivs:", "0"]


def test_cap_add_and_drop(store):
    res = sh(store, "grep CapEff /proc/self/status", cap_add=["SYS_ADMIN"], cap_drop=["CAP_NET_RAW"])
    assert int(res.stdout.split()[1], 16) == (0xA80425FB | 1 << 21) & ~(1 << 13)


def test_proc_is_masked_and_sys_is_readonly(store):
    # This kernel may lack /proc/kcore; every masked path the host has must read empty inside.
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    assert masked
    script = "".join(f"wc -c < {p}; " for p in masked)
    res = sh(store, "exec 2>&1; " + script + "touch /sys/x; echo 1 > /proc/sys/kernel/hostname 2>&1; "
                    "ls /sys/firmware | wc -l; echo 1 > /proc/sysrq-trigger 2>&1")
    out = res.stdout.decode().splitlines()
    assert [line.strip() for line in out[:len(masked)]] == ["0"] * len(masked), out
    assert "Read-only file system" in out[len(masked)]
    assert "Read-only file system" in out[len(masked) + 1]
    assert out[len(masked) + 2].strip() == "0"
    if os.path.exists("/proc/sysrq-trigger"):
        assert "Read-only file system" in out[len(masked) + 3]


def test_readonly_rootfs(store):
    res = sh(store, "touch /x 2>&1; touch /dev/shm/ok && echo shm-ok", readonly_rootfs=True)
    assert b"Read-only file system" in res.stdout
    assert b"shm-ok" in res.stdout


def test_user_by_name_and_volume(store, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in").write_text("from host\n")
    res = sh(store, "id -u; cat /data/in; touch /data/out 2>&1 || true", user="nobody",
             mounts=[Volume(str(vol), "/data", readonly=True)])
    assert res.stdout.decode().splitlines()[:2] == ["65534", "from host"]
    assert not (vol / "out").exists()


def test_exec_sees_the_same_hostname_and_pid_namespace(store):
    spec = store.make_spec("sleep", "30", hostname="execbox")
    store.runtime.run(spec, detach=True)
    res = store.runtime.exec(spec.id, ["sh", "-c", "hostname; ps -o pid,comm | grep sleep"])
    assert res.exit_code == 0
    host, ps = res.stdout.decode().splitlines()
    assert host == "execbox"
    assert ps.split() == ["1", "sleep"]
    assert store.runtime.exec(spec.id, ["cat"], stdin=b"via exec").stdout == b"via exec"


def test_exec_into_a_stopped_container_is_refused(store):
    spec = store.make_spec("true")
    store.runtime.run(spec)
    with pytest.raises(StateTransitionError, match=f"container {spec.name} is not running"):
        store.runtime.exec(spec.id, ["true"])


def test_name_in_use_is_refused_and_leaves_nothing(store):
    first = store.make_spec("sleep", "30", name="taken")
    store.runtime.run(first, detach=True)
    second = store.make_spec("true", name="taken")
    with pytest.raises(AlreadyExistsError, match=f"already in use by container {first.id[:12]}"):
        store.runtime.create(second)
    assert not (store.root / "containers" / second.id).exists()
    assert f" {second.merged} " not in host_mounts()
    assert not any(os.path.exists(p) for p in cgroups.paths(second.id).values())


def test_bad_volume_path_is_refused_and_leaves_nothing(store):
    spec = store.make_spec("true", mounts=[Volume("/no/such/dir", "/data")])
    with pytest.raises(InvalidArgumentError, match="/no/such/dir"):
        store.runtime.create(spec)
    assert not (store.root / "containers" / spec.id).exists()


def test_pause_and_unpause_freeze_the_container(store):
    spec = store.make_spec("sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/tick; usleep 10000; done")
    store.runtime.run(spec, detach=True)
    upper = store.snapshotter.container_layer(spec.id).upper / "tmp" / "tick"
    time.sleep(0.2)
    store.runtime.pause(spec.id)
    assert store.runtime.state(spec.id).status == "paused"
    with pytest.raises(StateTransitionError):
        store.runtime.delete(spec.id)
    before = upper.read_text()
    time.sleep(0.3)
    assert upper.read_text() == before
    store.runtime.unpause(spec.id)
    assert store.runtime.state(spec.id).status == "running"
    time.sleep(0.3)
    assert upper.read_text() != before


def test_stop_falls_back_to_sigkill_after_timeout(store):
    spec = store.make_spec("sh", "-c", "trap '' TERM; while :; do sleep 1; done")
    store.runtime.run(spec, detach=True)
    start = time.monotonic()
    store.runtime.stop(spec.id, timeout=1)
    took = time.monotonic() - start
    st = store.runtime.state(spec.id)
    assert (st.status, st.exit_code) == ("exited", 137)
    assert 0.9 < took < 5


def test_stop_with_a_term_handler_exits_cleanly(store):
    spec = store.make_spec("sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done")
    store.runtime.run(spec, detach=True)
    time.sleep(0.2)
    store.runtime.stop(spec.id, timeout=10)
    assert store.runtime.state(spec.id).exit_code == 7


def test_create_then_start_lifecycle(store):
    spec = store.make_spec("sh", "-c", "exit 5")
    st = store.runtime.create(spec)
    assert st.status == "created" and st.pid > 0
    assert store.runtime.start(spec.id).status in ("running", "exited")
    assert store.runtime.wait(spec.id) == 5
    with pytest.raises(StateTransitionError):
        store.runtime.start(spec.id)
    assert [s.id for s in store.runtime.list()] == [spec.id]


def test_container_survives_caller_exit_and_runner_sigkill(store):
    spec = store.make_spec("sh", "-c", "sleep 1; exit 9")
    code = (
        "import sys, pickle; from nbcontainer.runtime import Runtime\n"
        "spec = pickle.loads(sys.stdin.buffer.read())\n"
        f"Runtime({str(store.root)!r}).run(spec, detach=True)\n"
    )
    import pickle

    subprocess.run([sys.executable, "-c", code], input=pickle.dumps(spec), check=True,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})
    runner = int((store.root / "run" / "runner.pid").read_text())
    os.kill(runner, signal.SIGKILL)
    assert store.runtime.state(spec.id).status == "running"
    assert store.runtime.wait(spec.id, timeout=10) == 9
    assert store.runtime.runner_pid() != runner


def test_twenty_concurrent_creates_all_run_and_clean_up(store):
    specs = [store.make_spec("sh", "-c", f"exit {i}") for i in range(20)]
    results: dict[int, int] = {}

    def go(i: int) -> None:
        results[i] = store.runtime.run(specs[i]).exit_code
        store.runtime.delete(specs[i].id)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: i for i in range(20)}
    assert os.listdir(store.root / "containers") == []


def test_stdin_is_fed_to_the_process(store):
    assert run(store, "cat", stdin=b"hello stdin\n").stdout == b"hello stdin\n"


def test_setup_failure_names_the_step_and_leaves_nothing(store):
    from nbcontainer.errors import RuntimeSetupError

    spec = store.make_spec("true", user="nosuchuser")
    with pytest.raises(RuntimeSetupError, match="unable to find user nosuchuser") as info:
        store.runtime.create(spec)
    assert info.value.step == "user"
    assert not (store.root / "containers" / spec.id).exists()
    assert f" {spec.merged} " not in host_mounts()
    assert not any(os.path.exists(p) for p in cgroups.paths(spec.id).values())
