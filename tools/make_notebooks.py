"""Write the tutorial notebooks in notebooks/ (run once after editing; outputs are not committed)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent.parent / "notebooks"


def nb(cells):
    book = new_notebook(cells=[new_markdown_cell(c[3:]) if c.startswith("md:") else new_code_cell(c) for c in cells])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return book


NB01 = [
    "md:# Images and containers, from the inside\n\nThis notebook walks the classic Docker tutorial with "
    "`nbcontainer`: an image is a stack of layers, a container is one more writable layer on top, and "
    "overlayfs unions them. Every table below is a pandas DataFrame.",
    "%load_ext nbcontainer\nfrom nbcontainer import Engine\nfrom nbcontainer.widgets import UnionMountView, DiffView, LayerExplorer\n"
    "from nbcontainer.plots import LayerSizeChart\nengine = Engine()\nengine.root",
    "md:## Images and layers\nA base image built from the host's `busybox-static`, no registry needed.",
    "%container bootstrap busybox",
    "%container images",
    "%history busybox",
    "layers = %container layers busybox\nlayers[['index', 'diff_id', 'size', 'files', 'path']]",
    "md:## The union mount\nA container gets its own writable *upper* dir over the image's read-only "
    "*lower* dirs. While it runs, the overlay is a real mount on the host.",
    "%container run -d --name tutorial busybox sleep 600",
    "mounts = [line for line in open('/proc/mounts') if line.startswith('overlay') and str(engine.root) in line]\n"
    "print(mounts[0].replace(',', ',\\n  '))",
    "md:## A change lands in the upper dir",
    "%container exec tutorial sh -c 'echo this is a testfile > /tmp/testfile'",
    "info = %container inspect tutorial\ndata = info[0]['GraphDriver']['Data']\n"
    "upper = data['UpperDir']\nprint(upper)\nprint(open(upper + '/tmp/testfile').read())",
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
    "%load_ext nbcontainer\nfrom nbcontainer import Engine, frames\nfrom nbcontainer.plots import directory_sizes, layer_size_chart\n"
    "from nbcontainer.widgets import LayerExplorer\nengine = Engine()",
    "import os\nif not any(r.repository == 'debian' for r in engine.images()):\n    engine.bootstrap('debian:bookworm')\n"
    "%container images",
    "files = frames.to_frame('files', engine.files('debian:bookworm'))\nfiles.shape",
    "md:## The largest files",
    "files[files['type'] == 'file'].nlargest(15, 'size')[['path', 'size', 'layer']]",
    "md:## Bytes per directory",
    "visible = files[files['visible'] & (files['type'] == 'file')]\n"
    "visible.groupby(visible['path'].str.split('/').str[1:3].str.join('/'))['size'].sum().nlargest(10)",
    "directory_sizes(files, depth=2)",
    "md:## Wasted space\nAn earlier copy of a file that a later layer overwrites or deletes is shipped but never seen.",
    "print(f\"efficiency {frames.efficiency(files):.1%}\")\nframes.wasted(files).head()",
    "LayerExplorer(engine, 'debian:bookworm')",
]

NB03 = [
    "md:# Reproducible environments, one commit at a time\nEach step is a container whose changes are "
    "committed as a layer; the image history is the record of how the environment was made.",
    "%load_ext nbcontainer\nfrom nbcontainer import Engine\nengine = Engine()\n%container bootstrap busybox",
    "%container run --name step1 busybox sh -c 'mkdir -p /opt/app && echo \"print(42)\" > /opt/app/main.py'\n"
    "%commit -m 'step 1: application code' step1 env:step1",
    "%container run --name step2 env:step1 sh -c 'echo \"numpy==2.1\" > /opt/app/requirements.txt'\n"
    "%commit -m 'step 2: pin requirements' -c 'WORKDIR /opt/app' -c 'ENV APP_ENV=training' step2 env:step2",
    "%history env:step2",
    "%container run --rm env:step2 sh -c 'pwd; echo $APP_ENV; ls'",
    "%container layers env:step2",
    "md:## Share it\nThe archive is a plain docker-archive and OCI layout: `docker load`, `podman load` and "
    "`skopeo` read it.",
    "%container save -o env-step2.tar env:step2\nimport os\nos.path.getsize('env-step2.tar')",
    "%container rm step1 step2",
]

if __name__ == "__main__":
    for name, cells in [("01-images-and-containers", NB01), ("02-layer-analysis", NB02),
                        ("03-reproducible-environments", NB03)]:
        nbformat.write(nb(cells), HERE / f"{name}.ipynb")
        print("wrote", name)
