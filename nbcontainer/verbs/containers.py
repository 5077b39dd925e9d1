"""Container verbs: run, create, start, exec, ps, stop, kill, pause, unpause, rm, logs, wait, top,
diff, commit, export, prune."""

from __future__ import annotations

import argparse
from typing import Any

from nbcontainer.analysis import units as D
from nbcontainer.verbs.grammar import Result, verb


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--rm", dest="remove", action="store_true")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-v", "--volume", dest="volumes", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-h", "--hostname")
    p.add_argument("--entrypoint")
    p.add_argument("-m", "--memory")
    p.add_argument("--pids-limit", type=int, default=0)
    p.add_argument("--cpus", type=float, default=0.0)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--device", dest="devices", action="append", default=[],
                   help="add a host device: HOST[:CONTAINER][:rwm]")
    p.add_argument("--security-opt", action="append", default=[],
                   help="seccomp=unconfined|PROFILE.json, no-new-privileges")
    p.add_argument("--network", "--net", default=None,
                   help="bridge (default where root), none, host, container:NAME or a network name")
    p.add_argument("-p", "--publish", action="append", default=[])
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def options(a: argparse.Namespace) -> dict[str, Any]:
    """The Engine keyword arguments of ``run``/``create`` (``a.stdin_data``: what a face read for ``-i``)."""
    stdin = getattr(a, "stdin_data", None) if a.interactive else None
    return dict(
        name=a.name, env=a.env, env_file=a.env_file, volumes=a.volumes, workdir=a.workdir, user=a.user,
        hostname=a.hostname, entrypoint=a.entrypoint, memory=a.memory, pids_limit=a.pids_limit, cpus=a.cpus,
        read_only=a.read_only, cap_add=a.cap_add, cap_drop=a.cap_drop, network=a.network, stdin=stdin,
        tty=a.tty, publish=a.publish, devices=a.devices, security_opt=a.security_opt,
    )


def _run_parser(p: argparse.ArgumentParser) -> None:
    _run_options(p)


@verb("run", "run a command in a new container")
def _run_args(p: argparse.ArgumentParser) -> None:
    _run_parser(p)


@_run_args
def run(engine: Any, a: argparse.Namespace) -> Result:
    r = engine.run(a.image, a.command or None, detach=a.detach, remove=a.remove, **options(a))
    if a.detach:
        return Result(r, "lines", lines=[r.id])
    return Result(r, "run", exit_code=r.exit_code)


@verb("create", "create a new container")
def _create_args(p: argparse.ArgumentParser) -> None:
    _run_parser(p)


@_create_args
def create(engine: Any, a: argparse.Namespace) -> Result:
    opts = options(a)
    s = engine.create(a.image, a.command or None, **opts)
    return Result(s, "lines", lines=[s.id])


def _refs(p: argparse.ArgumentParser) -> None:
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


@verb("start", "start created containers")
def _start_args(p: argparse.ArgumentParser) -> None:
    _refs(p)


@_start_args
def start(engine: Any, a: argparse.Namespace) -> Result:
    return Result([engine.start(c) for c in a.containers], "lines", lines=a.containers)


@verb("stop", "stop running containers (SIGTERM, then SIGKILL after -t seconds)")
def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=int, default=10)
    _refs(p)


@_stop_args
def stop(engine: Any, a: argparse.Namespace) -> Result:
    return Result([engine.stop(c, timeout=a.time) for c in a.containers], "lines", lines=a.containers)


@verb("kill", "send a signal to running containers")
def _kill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--signal", default="KILL")
    _refs(p)


@_kill_args
def kill(engine: Any, a: argparse.Namespace) -> Result:
    return Result([engine.kill(c, signal=a.signal) for c in a.containers], "lines", lines=a.containers)


@verb("pause", "freeze the processes of containers")
def _pause_args(p: argparse.ArgumentParser) -> None:
    _refs(p)


@_pause_args
def pause(engine: Any, a: argparse.Namespace) -> Result:
    return Result([engine.pause(c) for c in a.containers], "lines", lines=a.containers)


@verb("unpause", "thaw paused containers")
def _unpause_args(p: argparse.ArgumentParser) -> None:
    _refs(p)


@_unpause_args
def unpause(engine: Any, a: argparse.Namespace) -> Result:
    return Result([engine.unpause(c) for c in a.containers], "lines", lines=a.containers)


@verb("rm", "remove containers")
def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true")
    _refs(p)


@_rm_args
def rm(engine: Any, a: argparse.Namespace) -> Result:
    for c in a.containers:
        engine.rm(c, force=a.force)
    return Result(a.containers, "lines", lines=a.containers)


@verb("wait", "wait for containers to stop and print their exit codes")
def _wait_args(p: argparse.ArgumentParser) -> None:
    _refs(p)


@_wait_args
def wait(engine: Any, a: argparse.Namespace) -> Result:
    codes = [engine.wait(c) for c in a.containers]
    return Result(codes, "lines", lines=[str(c) for c in codes])


@verb("exec", "run a command in a running container")
def _exec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)


@_exec_args
def exec_(engine: Any, a: argparse.Namespace) -> Result:
    stdin = getattr(a, "stdin_data", None) if a.interactive else None
    r = engine.exec(a.container, a.command, env=a.env or None, cwd=a.workdir, user=a.user, stdin=stdin,
                    tty=a.tty, detach=a.detach)
    return Result(r, "run", exit_code=getattr(r, "exit_code", 0))


@verb("ps", "list containers")
def _ps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")


@_ps_args
def ps(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.ps(all=a.all)
    if a.quiet:
        return Result(rows, "lines", lines=[r.id if a.no_trunc else r.id[:12] for r in rows])
    return Result(
        rows, columns=["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
        rows=[[r.id if a.no_trunc else r.id[:12], r.image,
               '"' + (r.command if a.no_trunc else D.trunc(r.command, 20)) + '"',
               D.since(r.created), r.status, r.ports, r.name] for r in rows],
        frame="ps",
    )


@verb("logs", "fetch the logs of a container")
def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", type=int)
    p.add_argument("container")


@_logs_args
def logs(engine: Any, a: argparse.Namespace) -> Result:
    if a.follow:  # the face drains the (stream, bytes) pairs as they come
        return Result(engine.logs(a.container, tail=a.tail, follow=True), "stream")
    out = list(engine.logs(a.container, tail=a.tail))
    return Result(out, "lines", lines=[d.decode("utf-8", "replace").rstrip("\n") for _s, d in out])


@verb("top", "display the running processes of a container")
def _top_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("container")


@_top_args
def top(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.top(a.container)
    cols = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    return Result(rows, columns=cols, rows=[[str(r[c]) for c in cols] for r in rows], frame="top")


@verb("diff", "changes to files in a container's filesystem (A added, C changed, D deleted)")
def _diff_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("container")


@_diff_args
def diff(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.diff(a.container)
    return Result(rows, "lines", lines=[f"{r.kind} {r.path}" for r in rows], frame="diff")


@verb("commit", "create a new image from a container's changes")
def _commit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--message", default="")
    p.add_argument("-a", "--author", default="")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-p", "--pause", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--squash", action="store_true")
    p.add_argument("container")
    p.add_argument("repository", nargs="?")


@_commit_args
def commit(engine: Any, a: argparse.Namespace) -> Result:
    img = engine.commit(a.container, a.repository, message=a.message, author=a.author, changes=a.change,
                        pause=a.pause, squash=a.squash)
    return Result(img, "lines", lines=[str(img.id)])


@verb("export", "export a container's filesystem as a tar archive")
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True)
    p.add_argument("container")


@_export_args
def export(engine: Any, a: argparse.Namespace) -> Result:
    return Result(engine.export(a.container, a.output), "lines")


@verb("container-prune", "remove all stopped containers")
def _cprune_args(p: argparse.ArgumentParser) -> None:
    pass


@_cprune_args
def container_prune(engine: Any, a: argparse.Namespace) -> Result:
    gone = engine.container_prune()
    lines = ["Deleted Containers:", *gone] if gone else ["Total reclaimed space: 0B"]
    return Result(gone, "lines", lines=lines)
