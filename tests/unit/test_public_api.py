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

    code = "import sys, nbcontainer; print(' '.join(m for m in ('pandas', 'ipywidgets', 'matplotlib', 'IPython', 'pyroute2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
