import nbcontainer


def test_the_package_face_is_pinned():
    assert sorted(nbcontainer.__all__) == sorted([
        "Engine", "default_root", "Reference", "NbContainerError", "NotFoundError", "AlreadyExistsError",
        "InvalidArgumentError", "DigestMismatchError", "UnsafeArchiveError", "StateTransitionError",
        "RuntimeSetupError", "RegistryError", "UnsupportedHostError", "load_ipython_extension", "__version__",
    ])
    for name in nbcontainer.__all__:
        assert hasattr(nbcontainer, name)


def test_import_stays_light():
    import subprocess
    import sys

    heavy = ("pandas", "httpx", "pyroute2", "ipywidgets", "matplotlib", "IPython", "tqdm", "zstandard",
             "pyseccomp", "nbcontainer.engine", "nbcontainer.notebook")
    code = f"import sys, nbcontainer; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_the_engine_loads_on_first_use():
    import subprocess
    import sys

    code = "from nbcontainer import Engine, Reference; print(Engine.__module__, Reference.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["nbcontainer.engine", "nbcontainer.oci"]
    assert {"Engine", "default_root", "Reference"} <= set(dir(nbcontainer))
