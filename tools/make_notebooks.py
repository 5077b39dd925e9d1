"""Write the tutorial notebooks in notebooks/ (run once after editing; outputs are not committed).

``python tools/make_notebooks.py [NAME ...]`` writes the named notebooks (default: all), skipping any whose
cells are unchanged so that their random cell ids do not churn.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent.parent / "notebooks"


def nb(cells):
    book = new_notebook(cells=[new_markdown_cell(c[3:]) if c.startswith("md:") else new_code_cell(c)
                               for c in cells])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return book


NB01 = [
    ("md:# Images and containers, from the inside\n\nThis notebook walks the classic Docker tutorial with "
     "`nbcontainer`: an image is a stack of layers, a container is one more writable layer on top, and "
     "overlayfs unions them. Every table below is a pandas DataFrame."),
    ("%load_ext nbcontainer\nfrom nbcontainer import Engine\n"
     "from nbcontainer.notebook.widgets import DiffView, LayerExplorer, LayerSizeChart, UnionMountView\n"
     "engine = Engine()\nengine.root"),
    "md:## Images and layers\nA base image built from the host's `busybox-static`, no registry needed.",
    "%container bootstrap busybox",
    "%container images",
    "%history busybox",
    "layers = %container layers busybox\nlayers[['index', 'diff_id', 'size', 'files', 'path']]",
    ("md:## The union mount\nA container gets its own writable *upper* dir over the image's read-only "
     "*lower* dirs. While it runs, the overlay is a real mount on the host."),
    "%container run -d --name tutorial busybox sleep 600",
    ("mounts = [line for line in open('/proc/mounts') "
     "if line.startswith('overlay') and str(engine.root) in line]\n"
     "print(mounts[0].replace(',', ',\\n  '))"),
    "md:## A change lands in the upper dir",
    "%container exec tutorial sh -c 'echo this is a testfile > /tmp/testfile'",
    ("info = %container inspect tutorial\ndata = info[0]['GraphDriver']['Data']\n"
     "upper = data['UpperDir']\nprint(upper)\nprint(open(upper + '/tmp/testfile').read())"),
    "%container diff tutorial",
    "view = UnionMountView(engine, 'tutorial')\nview.path.value = '/tmp/testfile'\nview",
    "%container top tutorial",
    "md:## Commit the change as a new image",
    "%container stop -t 1 tutorial",
    "%commit -m 'added a test file' tutorial testfile",
    "%history testfile",
    "md:## Save, remove, load, run",
    "%container save -o testfile.tar testfile",
    "%container rm tutorial\n%container rmi testfile",
    "%container load -i testfile.tar",
    "%container run --rm testfile cat /tmp/testfile",
    "LayerSizeChart(engine, 'testfile')",
    "LayerExplorer(engine, 'testfile')",
]

NB02 = [
    "md:# Layer analysis with pandas\nWhat is inside a Debian minbase image, file by file.",
    ("%load_ext nbcontainer\nfrom nbcontainer import Engine\nfrom nbcontainer.analysis import frames\n"
     "from nbcontainer.analysis.plots import directory_sizes, layer_size_chart\n"
     "from nbcontainer.notebook.widgets import LayerExplorer\nengine = Engine()"),
    ("import os\nif not any(r.repository == 'debian' for r in engine.images()):\n"
     "    engine.bootstrap('debian:bookworm')\n"
     "%container images"),
    "files = frames.to_frame('files', engine.files('debian:bookworm'))\nfiles.shape",
    "md:## The largest files",
    "files[files['type'] == 'file'].nlargest(15, 'size')[['path', 'size', 'layer']]",
    "md:## Bytes per directory",
    ("visible = files[files['visible'] & (files['type'] == 'file')]\n"
     "visible.groupby(visible['path'].str.split('/').str[1:3].str.join('/'))['size'].sum().nlargest(10)"),
    "directory_sizes(files, depth=2)",
    ("md:## Wasted space\n"
     "An earlier copy of a file that a later layer overwrites or deletes is shipped but never seen."),
    "print(f\"efficiency {frames.efficiency(files):.1%}\")\nframes.wasted(files).head()",
    "LayerExplorer(engine, 'debian:bookworm')",
]

NB03 = [
    ("md:# Reproducible environments, one commit at a time\nEach step is a container whose changes are "
     "committed as a layer; the image history is the record of how the environment was made."),
    "%load_ext nbcontainer\nfrom nbcontainer import Engine\nengine = Engine()\n%container bootstrap busybox",
    ("%container run --name step1 busybox sh -c 'mkdir -p /opt/app && echo \"print(42)\" > "
     "/opt/app/main.py'\n"
     "%commit -m 'step 1: application code' step1 env:step1"),
    ("%container run --name step2 env:step1 sh -c 'echo \"numpy==2.1\" > /opt/app/requirements.txt'\n"
     "%commit -m 'step 2: pin requirements' -c 'WORKDIR /opt/app' -c 'ENV APP_ENV=training' step2 env:step2"),
    "%history env:step2",
    "%container run --rm env:step2 sh -c 'pwd; echo $APP_ENV; ls'",
    "%container layers env:step2",
    ("md:## Share it\nThe archive is a plain docker-archive and OCI layout: `docker load`, `podman load` and "
     "`skopeo` read it."),
    "%container save -o env-step2.tar env:step2\nimport os\nos.path.getsize('env-step2.tar')",
    "%container rm step1 step2",
]

NB05 = [
    ("md:# Isolation: what a container sees and may not do\n\nA container is an ordinary Linux process. "
     "What sets it apart is what the kernel lets it *see* (namespaces), how much it may *use* (cgroups) "
     "and what it may *do* (the device cgroup, capabilities, seccomp, no_new_privs). Each section runs "
     "the same check inside a busybox container and in this notebook's kernel process on the host."),
    ("%load_ext nbcontainer\nimport json\nimport os\nimport socket\nimport stat\n\nimport pandas as pd\n\n"
     "from nbcontainer import Engine\nfrom nbcontainer.runtime.caps import NAMES\n"
     "from nbcontainer.runtime.devices import rules_for\n\n"
     "pd.set_option('display.max_colwidth', None)\nengine = Engine()"),
    "%container bootstrap busybox",
    ("md:Two helpers: `run` starts a throwaway container (`--rm`, no network) and returns its result "
     "(`exit_code`, `stdout`, `stderr`); `cgroup_file` reads one file of a container's cgroup on the host."),
    ("def run(*argv, **opts):\n"
     "    \"\"\"argv in a new busybox container with no network, removed when it exits.\"\"\"\n"
     "    return engine.run('busybox', list(argv), network='none', remove=True, **opts)\n\n\n"
     "def text(result):\n"
     "    \"\"\"stdout and stderr of a result as one string.\"\"\"\n"
     "    return (result.stdout + result.stderr).decode().strip()\n\n\n"
     "def outcome(result):\n"
     "    return 'ok' if result.exit_code == 0 else f'exit {result.exit_code}: {text(result)}'\n\n\n"
     "def status_fields(status, *fields):\n"
     "    \"\"\"Fields of a /proc/<pid>/status text, e.g. 'Seccomp' -> '2'.\"\"\"\n"
     "    rows = dict(line.split(':', 1) for line in status.splitlines() if ':' in line)\n"
     "    return {f: rows[f].strip() for f in fields}\n\n\n"
     "def cgroup_file(name, path):\n"
     "    \"\"\"'memory/memory.limit_in_bytes' of container `name`: its group of that controller, read on "
     "the host.\"\"\"\n"
     "    controller, file = path.split('/')\n"
     "    with open(os.path.join(engine.container(name).cgroups[controller], file)) as f:\n"
     "        return f.read().strip()"),

    ("md:## 1. Namespaces: what it sees\n"
     "A namespace gives its processes a private copy of one global resource. Each namespace is a kernel "
     "object with an inode number, and `/proc/<pid>/ns/<kind>` is a link naming it, so two processes share "
     "a namespace exactly when their links name the same inode."),
    ("WHAT = {'mnt': 'mount table', 'pid': 'process ids', "
     "'net': 'interfaces, routes, ports', 'uts': 'hostname',\n"
     "        'ipc': 'System V IPC, POSIX message queues', 'user': 'uids, gids, capabilities',\n"
     "        'cgroup': 'the cgroup paths it sees', 'time': 'boot and monotonic clocks'}\n"
     "r = run('sh', '-c', 'for ns in /proc/self/ns/*; do echo $(basename $ns) $(readlink $ns); done')\n"
     "inside = dict(line.split() for line in r.stdout.decode().splitlines())\n\n\n"
     "def inode(link):  # 'net:[4026531840]' -> 4026531840\n"
     "    return int(link.split('[')[1].rstrip(']'))\n\n\n"
     "kinds = [k for k in WHAT if k in inside and os.path.exists(f'/proc/self/ns/{k}')]\n"
     "ns = pd.DataFrame({'namespace': kinds, 'isolates': [WHAT[k] for k in kinds],\n"
     "                   'host inode': [inode(os.readlink(f'/proc/self/ns/{k}')) for k in kinds],\n"
     "                   'container inode': [inode(inside[k]) for k in kinds]})\n"
     "ns['shared'] = ns['host inode'] == ns['container inode']\nns"),
    ("md:`mnt`, `pid`, `net`, `uts` and `ipc` are new for every container. The others are the host's:\n\n"
     "* **user**: there is no user namespace, so root in the container *is* uid 0 on the host (Docker does "
     "the same unless `userns-remap` is configured). What keeps that root in check is everything below: "
     "capabilities, seccomp and the device cgroup.\n"
     "* **cgroup**: on a cgroup v1 or hybrid host, like the one this notebook was written on, the container "
     "keeps the host's cgroup namespace, as Docker's default `--cgroupns=host` there; on a pure cgroup v2 "
     "host both give it a private one.\n"
     "* **time**: neither Docker nor nbcontainer makes a time namespace; the clocks are the host's.\n\n"
     "With `--network none` the new network namespace holds only a loopback interface:"),
    "%container run --rm --network none busybox ip link",

    ("md:## 2. Processes and hostname\n"
     "In its own PID namespace the container's command is PID 1 and sees no host process. The host sees "
     "the same process under an ordinary PID: `NSpid` in `/proc/<pid>/status` lists its PID in each "
     "namespace, outermost first. The UTS namespace gives it its own hostname (the short id unless "
     "`--hostname` says otherwise)."),
    "%container run -d --name iso --network none busybox sleep 600",
    "%container exec iso ps",
    ("c = engine.container('iso')\n"
     "nspid = status_fields(open(f'/proc/{c.pid}/status').read(), 'NSpid')['NSpid'].split()\n"
     "host_procs = sum(p.isdigit() for p in os.listdir('/proc'))\n"
     "container_procs = engine.exec('iso', "
     "['sh', '-c', 'ls -d /proc/[0-9]* | wc -l']).stdout.decode().strip()\n"
     "pd.DataFrame({'host': [nspid[0], socket.gethostname(), host_procs],\n"
     "              'container': [nspid[1], engine.exec('iso', ['hostname']).stdout.decode().strip(), "
     "container_procs]},\n"
     "             index=['PID of `sleep 600`', 'hostname', 'processes in /proc'])"),
    "%container rm -f iso",

    ("md:## 3. cgroups: how much it may use\n"
     "A cgroup is a group of processes the kernel accounts for and limits together. Every container gets "
     "its own group `nbcontainer/<id>` in each controller; `--memory` and `--pids-limit` are written to "
     "that group's files. The container state records the group directories on the host:"),
    "%container run -d --name limited --network none -m 64m --pids-limit 20 busybox sleep 600",
    ("groups = engine.container('limited').cgroups\n"
     "V1 = 'memory' in groups  # cgroup v1 or hybrid: one directory per controller; v2: one 'unified' group\n"
     "M, P = ('memory', 'pids') if V1 else ('unified', 'unified')\n"
     "pd.Series(groups, name='group directory on the host').to_frame()"),
    ("FILES = {'memory limit': f'{M}/memory.limit_in_bytes' if V1 else f'{M}/memory.max',\n"
     "         'memory in use': f'{M}/memory.usage_in_bytes' if V1 else f'{M}/memory.current',\n"
     "         'pids limit': f'{P}/pids.max', 'pids in use': f'{P}/pids.current'}\n"
     "pd.DataFrame({'file': FILES.values(), 'value': [cgroup_file('limited', f) for f in FILES.values()]},\n"
     "             index=FILES.keys())"),
    ("md:From the inside the limits are not visible here: with the host's cgroup namespace "
     "`/proc/self/cgroup` shows the host's paths, and nbcontainer does not mount a cgroup filesystem at "
     "`/sys/fs/cgroup` in the container (Docker mounts the container's own groups there, read-only)."),
    ("%container exec limited sh -c 'cat /proc/self/cgroup; echo; "
     "echo entries in /sys/fs/cgroup: $(ls /sys/fs/cgroup | wc -l)'"),
    ("md:The pids limit counts every process and thread of the group: a shell that tries to start 30 "
     "background jobs gets `fork` failing with EAGAIN once 20 are alive. `pids.events` counts the refusals."),
    ("r = engine.exec('limited', ['sh', '-c', 'for i in $(seq 30); do sleep 1 & done; wait'])\n"
     "print('exit', r.exit_code, '|', sorted(set(r.stderr.decode().splitlines())))\n"
     "print('pids.events:', cgroup_file('limited', f'{P}/pids.events'))"),
    "%container rm -f limited",
    ("md:Memory works the same way. `tail` without a newline in its input keeps everything in memory; "
     "under a 32 MiB limit the kernel's OOM killer ends it, the shell exits 137 (128 + SIGKILL) and the "
     "state records `OOMKilled`, as `docker inspect` does."),
    ("r = engine.run('busybox', ['sh', '-c', 'head -c 200m /dev/zero | tail'], "
     "name='hog', memory='32m', network='none')\n"
     "state = engine.inspect('hog')['State']\n"
     "events = status_fields(cgroup_file('hog', f'{M}/memory.oom_control' if V1 else f'{M}/memory.events')"
     ".replace(' ', ':'), 'oom_kill')\n"
     "pd.Series({'exit code': r.exit_code, 'stderr': r.stderr.decode().strip(), "
     "'State.OOMKilled': state['OOMKilled'],\n"
     "           'memory limit': cgroup_file('hog', FILES['memory limit']), "
     "'oom kills in the group': events['oom_kill']},\n"
     "          name='hog').to_frame()"),
    "%container rm hog",

    ("md:## 4. Devices\n"
     "A container does not get the host's `/dev`: it gets a small tmpfs with the harmless nodes "
     "(`null`, `zero`, `full`, `random`, `urandom`, `tty`, `pts/`, `ptmx`, `shm`, `mqueue`). "
     "Which *device numbers* it may open is a second, separate control: the device cgroup."),
    "%container run --rm --network none busybox ls -l /dev",
    ("inside = set(run('ls', '/dev').stdout.decode().split())\n"
     "rows = []\n"
     "for name in ['null', 'zero', 'random', 'urandom', 'tty', 'console', 'kmsg', 'mem', "
     "'loop-control', 'loop0',\n"
     "             'fuse', 'kvm', 'sda', 'vda', 'nvme0n1']:\n"
     "    if os.path.exists('/dev/' + name):\n"
     "        st = os.stat('/dev/' + name)\n"
     "        rows.append({'host device': '/dev/' + name, "
     "'type': 'char' if stat.S_ISCHR(st.st_mode) else 'block',\n"
     "                     'major:minor': f'{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}', "
     "'in container': name in inside})\n"
     "pd.DataFrame(rows)"),
    ("md:The device cgroup holds an allow list: `type major:minor access`, with type `c` (char), `b` (block) "
     "or `a` (all), `*` for any number, access `r` (read), `w` (write) and `m` (mknod). Anything not listed "
     "is refused. We start one container with the defaults and one with `--device /dev/loop-control`, "
     "then read their lists (`devices.list` of the v1 `devices` group; on cgroup v2 the same rules are "
     "compiled into an eBPF program attached to the group, which has no file to read)."),
    ("%container run -d --name plain --network none busybox sleep 600\n"
     "%container run -d --name withloop --network none --device /dev/loop-control busybox sleep 600"),
    ("KNOWN = {'1:3': 'null', '1:5': 'zero', '1:7': 'full', '1:8': 'random', "
     "'1:9': 'urandom', '5:0': 'tty',\n"
     "         '5:1': 'console', '5:2': 'ptmx', '136:*': 'pts/*', '10:237': 'loop-control', '*:*': 'any'}\n"
     "\n\n"
     "def device_rules(name):\n"
     "    c = engine.container(name)\n"
     "    if 'devices' in c.cgroups:\n"
     "        lines = cgroup_file(name, 'devices/devices.list').splitlines()\n"
     "    else:  # cgroup v2: the rules the eBPF program was built from\n"
     "        lines = [r.v1_text() for r in rules_for([]) if r.allow]\n"
     "        lines += [f\"{d['type']} {d['major']}:{d['minor']} {d['access']}\" for d in c.spec.devices]\n"
     "    rows = [line.split() for line in lines]\n"
     "    return pd.DataFrame([{'type': {'a': 'all', 'c': 'char', 'b': 'block'}[t], "
     "'major:minor': n, 'access': a,\n"
     "                          'device': KNOWN.get(n, '')} for t, n, a in rows])\n\n\n"
     "rules = device_rules('plain')\nrules"),
    ("md:`c *:* m` and `b *:* m` allow `mknod` of any node (root holds `CAP_MKNOD`), but making a node "
     "is not opening it: the open is checked against the list and refused."),
    ("%container exec plain sh -c 'mknod /tmp/loop-control c 10 237 && ls -l /tmp/loop-control "
     "&& : < /tmp/loop-control'"),
    ("md:`--device /dev/loop-control` creates the node in the container's `/dev` and adds one rule for "
     "its number, so now the open succeeds:"),
    ("with_loop = device_rules('withloop')\n"
     "with_loop[~with_loop['major:minor'].isin(rules['major:minor'])]"),
    "%container exec withloop sh -c 'ls -l /dev/loop-control && : < /dev/loop-control && echo opened'",
    "%container rm -f plain withloop",

    ("md:## 5. Capabilities: root, cut into pieces\n"
     "Linux splits root's power into about 40 capabilities, checked one by one (`CAP_NET_ADMIN` to "
     "configure interfaces, `CAP_SYS_ADMIN` to mount, …). A process has five sets, shown as hex masks "
     "in `/proc/<pid>/status` (bit *n* = capability number *n*):\n\n"
     "* **CapEff** effective: what the kernel checks now;\n"
     "* **CapPrm** permitted: what it may make effective;\n"
     "* **CapInh** inheritable and **CapAmb** ambient: what may survive an `execve`;\n"
     "* **CapBnd** bounding: the ceiling; nothing outside it can ever be gained, even by a setuid program.\n"
     "\n"
     "A container's root gets Docker's 14 default capabilities. A non-root user (`--user 65534`) holds "
     "none, but keeps the bounding set; `--cap-drop ALL` empties every set; `--cap-add` adds one."),
    ("def cap_sets(status):\n"
     "    \"\"\"{'CapEff': mask, ...} of a /proc/<pid>/status text.\"\"\"\n"
     "    return {k: int(v, 16) for k, v in status_fields(status, 'CapEff', 'CapPrm', 'CapInh', 'CapBnd', "
     "'CapAmb').items()}\n\n\n"
     "CASES = {'--user 65534': {'user': '65534'}, 'root (default)': {}, "
     "'--cap-drop ALL': {'cap_drop': ['ALL']},\n"
     "         '--cap-add NET_ADMIN': {'cap_add': ['NET_ADMIN']}}\n"
     "with open('/proc/self/status') as f:\n"
     "    sets = {'host kernel process': cap_sets(f.read())}\n"
     "for label, opts in CASES.items():\n"
     "    sets[label] = cap_sets(run('cat', '/proc/self/status', **opts).stdout.decode())\n"
     "sets = pd.DataFrame(sets).T\n"
     "sets.map(lambda mask: f'{mask.bit_count():2} ({mask:x})')"),
    ("md:The same sets per capability: `e` effective, `p` permitted, `b` bounding, `i` inheritable, "
     "`a` ambient (`nbcontainer.runtime.caps.NAMES` is indexed by bit). Rows are the capabilities some "
     "container here holds in some set:"),
    ("LETTERS = {'CapEff': 'e', 'CapPrm': 'p', 'CapBnd': 'b', 'CapInh': 'i', 'CapAmb': 'a'}\n"
     "held = pd.DataFrame({label: [''.join(ch for key, ch in LETTERS.items() "
     "if sets.loc[label, key] >> bit & 1)\n"
     "                             for bit in range(len(NAMES))] for label in sets.index}, "
     "index=list(NAMES))\n"
     "containers = held.drop(columns='host kernel process')\n"
     "print('held by the host process, by none of these containers:',\n"
     "      ', '.join(held.index[(containers == '').all(axis=1) & (held['host kernel process'] != '')]))\n"
     "held[(containers != '').any(axis=1)]"),
    "md:One of them at work: taking the loopback interface down needs `CAP_NET_ADMIN`.",
    ("pd.Series({label: outcome(run('ip', 'link', 'set', 'lo', 'down', **opts))\n"
     "           for label, opts in [('root (default)', {}), "
     "('--cap-add NET_ADMIN', {'cap_add': ['NET_ADMIN']})]},\n"
     "          name='ip link set lo down').to_frame()"),

    ("md:## 6. Seccomp: which system calls it may make\n"
     "A seccomp filter is a small BPF program the kernel runs on every system call of the process. "
     "Docker's default profile is an allow list of about 350 calls; anything else fails with `EPERM` "
     "before the kernel does any work. Calls that need a capability (`mount`, `unshare`, `setns`, "
     "`ptrace`, `bpf`, …) are allowed only when the container holds it. `Seccomp:` in "
     "`/proc/<pid>/status` is 0 (off), 1 (strict) or 2 (filter); `--security-opt seccomp=unconfined` "
     "turns it off."),
    ("SECCOMP = {'default': [], 'seccomp=unconfined': ['seccomp=unconfined']}\n"
     "pd.DataFrame({label: status_fields(run('cat', '/proc/self/status', "
     "security_opt=opts).stdout.decode(),\n"
     "                                   'Seccomp', 'Seccomp_filters') "
     "for label, opts in SECCOMP.items()}).T"),
    ("md:A few calls tried under the default profile, with seccomp off, and with `CAP_SYS_ADMIN` added "
     "(default profile). busybox prints `EPERM` from `mount` as \"permission denied (are you root?)\"."),
    ("TRIES = {'unshare -U -r true': 'unshare(CLONE_NEWUSER)', 'unshare -m true': 'unshare(CLONE_NEWNS)',\n"
     "         'mount -t tmpfs none /tmp': 'mount', 'chroot / true': 'chroot'}\n"
     "SETTINGS = {'default': {}, 'seccomp=unconfined': {'security_opt': ['seccomp=unconfined']},\n"
     "            '--cap-add SYS_ADMIN': {'cap_add': ['SYS_ADMIN']}}\n"
     "tries = pd.DataFrame({label: {cmd: outcome(run(*cmd.split(), **opts)) for cmd in TRIES}\n"
     "                      for label, opts in SETTINGS.items()})\n"
     "tries.insert(0, 'system call', TRIES.values())\ntries"),
    ("md:* `unshare -U` (a new user namespace) needs no capability at all: seccomp alone stops it, because "
     "user namespaces expose a lot of kernel code to unprivileged processes.\n"
     "* `unshare -m` and `mount` are stopped twice: with seccomp off the capability check still refuses "
     "them. Adding `CAP_SYS_ADMIN` lifts both, since the default profile follows the capabilities; "
     "that is why "
     "`--cap-add SYS_ADMIN` comes close to `--privileged` (Docker adds an AppArmor profile on hosts that "
     "have AppArmor, which still refuses `mount`; nbcontainer uses no LSM).\n"
     "* `chroot` is allowed: the container holds `CAP_SYS_CHROOT`.\n\n"
     "### A profile of your own\n"
     "`--security-opt seccomp=FILE` takes a profile in Docker's JSON schema. It *replaces* the default "
     "profile: this one allows everything except `mkdir`, so `unshare -U` works again."),
    ("profile = {'defaultAction': 'SCMP_ACT_ALLOW',\n"
     "           'syscalls': [{'names': ['mkdir', 'mkdirat'], 'action': 'SCMP_ACT_ERRNO'}]}\n"
     "with open('no-mkdir.json', 'w') as f:\n"
     "    json.dump(profile, f, indent=2)\n"
     "pd.Series({cmd: outcome(run('sh', '-c', cmd, security_opt=['seccomp=no-mkdir.json']))\n"
     "           for cmd in ['mkdir /tmp/new', 'touch /tmp/new', 'unshare -U -r true']},\n"
     "          name='seccomp=no-mkdir.json').to_frame()"),
    "%container run --rm --network none --security-opt seccomp=no-mkdir.json busybox mkdir /tmp/new",

    ("md:## 7. no_new_privs\n"
     "`prctl(PR_SET_NO_NEW_PRIVS)` makes `execve` unable to grant privileges: setuid and setgid bits and "
     "file capabilities are ignored from then on, for the process and all its children. Docker leaves it off "
     "by default (so `su` or a setuid `ping` in an image still work) and sets it with "
     "`--security-opt no-new-privileges`."),
    ("NNP = {'default': [], 'no-new-privileges': ['no-new-privileges']}\n"
     "pd.DataFrame({label: status_fields(run('cat', '/proc/self/status', "
     "security_opt=opts).stdout.decode(),\n"
     "                                   'NoNewPrivs', 'Seccomp') for label, opts in NNP.items()}).T"),
    "md:Every container above was removed (`--rm`, or `rm` at the end of its section):",
    "%container ps -a",
]

NOTEBOOKS = {"01-images-and-containers": NB01, "02-layer-analysis": NB02,
             "03-reproducible-environments": NB03, "05-isolation": NB05}


def _same_cells(path, book):
    """The notebook on disk has the same cells (type and source; ids are random) as ``book``."""
    if not path.exists():
        return False
    old = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.source) for c in old.cells] == [(c.cell_type, c.source) for c in book.cells]


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or NOTEBOOKS:
        book, path = nb(NOTEBOOKS[name]), HERE / f"{name}.ipynb"
        if _same_cells(path, book):
            print("unchanged", name)
            continue
        nbformat.write(book, path)
        print("wrote", name)
