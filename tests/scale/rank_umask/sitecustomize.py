"""Put on PYTHONPATH by tests/scale/test_engine_resume.py: every worker of a launch other than global rank 0
creates its files with umask 077 (mode 0600), rank 0 with umask 022 (0644), so that the test can tell who
wrote each file of a run directory (hatch's atomic writes follow the umask too: utils/io.py).

safetensors (0.8) writes every file 0600 whatever the umask (through a temporary file): its `save_file` is
wrapped, as the module loads, to give the file the umask's mode afterwards."""
import importlib.abc
import os
import sys

_rank = os.environ.get("RANK")


class _WrapSafetensors(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "safetensors.torch":
            return None
        sys.meta_path.remove(self)
        try:
            from importlib.util import find_spec

            spec = find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            save_file = module.save_file

            def save_file_with_umask(tensors, filename, *args, **kwargs):
                result = save_file(tensors, filename, *args, **kwargs)
                os.chmod(filename, 0o666 & ~_mask)
                return result

            module.save_file = save_file_with_umask

        spec.loader.exec_module = exec_and_wrap
        return spec


if _rank is not None:
    _mask = 0o022 if _rank == "0" else 0o077
    os.umask(_mask)
    sys.meta_path.insert(0, _WrapSafetensors())
