"""The command line offers exactly the adapters' families, without importing torch for --help."""
import subprocess
import sys


def test_cli_families_are_the_adapters():
    from hatch_vlm.cli import _families
    from hatch_vlm.models.adapters import FAMILIES

    assert _families() == list(FAMILIES)


def test_help_does_not_import_torch():
    code = ("import sys; from hatch_vlm.cli import build_parser; build_parser(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
