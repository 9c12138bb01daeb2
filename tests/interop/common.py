"""What the interop tests share: the paths they take (TEST_MODELS_DIR MOED_BINARY as the first
two arguments, taken off sys.argv before unittest reads it), running a command, and the check
that node and the npm packages are installed."""
import os
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build", "test-models")
MOED = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build", "daemon", "moed")


def run(command, timeout=600):
    """The command's stdout; an AssertionError with its stderr when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError("%s failed:\n%s" % (" ".join(command[:3]), result.stderr))
    return result.stdout


def node(script, *args):
    return run(["node", os.path.join(HERE, script), *args])


def main(name):
    if shutil.which("node") is None or not os.path.isdir(os.path.join(HERE, "node_modules")):
        sys.exit("%s: needs node and tests/interop/node_modules (run scripts/install-deps.sh)"
                 % name)
    unittest.main(verbosity=2)
