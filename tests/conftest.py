"""Shared test setup.

The unit tests run tiny models, where extra threads cost more than they bring and, on a busy
2-core machine, oversubscription slows a 50 ms UNet call to seconds. One thread by default;
STYO_TEST_THREADS overrides it.
"""

import importlib.util
import os
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ.get("STYO_TEST_THREADS", "1")))

ROOT = Path(__file__).resolve().parent.parent


def benchmark_script(name: str):
    """A script of benchmarks/ as a module (importing one sets no environment and loads no model);
    the scripts are not a package, so tests load them by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def styo_in_process(*args, cwd=None):
    """``styo ARGS`` run by ``styo.cli.main`` in this process, returned as a subprocess would be
    (exit code, stdout, stderr). For the error cases, where a new interpreter adds only its start-up
    time; the console script itself is exercised by the tests of successful runs."""
    import io
    import subprocess
    from contextlib import redirect_stderr, redirect_stdout

    from styo.cli import main

    out, err, here, environ = io.StringIO(), io.StringIO(), os.getcwd(), dict(os.environ)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)  # the command quiets libraries through the environment
    return subprocess.CompletedProcess(["styo", *map(str, args)], code, out.getvalue(), err.getvalue())
