"""Run many ``stcn`` command lines, each in its own process, paying for the imports once.

    python cli_forks.py CASES.json RESULTS.json WORKERS

CASES.json holds ``[{"argv": [...], "cwd": "...", "env": {...}}, ...]``. This process imports the
command line (torch, PyAV, PIL: seconds of CPU each time) and then forks one child per case, at most
WORKERS at a time. Each child is what ``python -m stcn.cli ARGV`` is after its imports: it moves to
``cwd``, sets ``env``, sends its stdout and stderr to files and exits with ``stcn.cli.main(argv)``'s
status; an exception that escapes prints its traceback and exits 1, as the interpreter would.
RESULTS.json gets ``[{"returncode", "stdout", "stderr"}, ...]`` in the order of the cases.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback


def _child(case: dict, out_path: str, err_path: str) -> None:
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(err, 2)
    code = 1
    try:
        os.chdir(case["cwd"])
        os.environ.update(case.get("env", {}))
        from stcn.cli import main

        code = main([str(a) for a in case["argv"]])
    except SystemExit as exc:  # argparse errors exit through SystemExit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the child exits below whatever happens
                pass
        os._exit(code if isinstance(code, int) else 1)


def main() -> None:
    cases_path, results_path, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(cases_path) as fh:
        cases = json.load(fh)
    import stcn.cli  # noqa: F401 - the imports every child shares
    import stcn.inference.segment  # noqa: F401
    import stcn.io.writers  # noqa: F401

    stcn.cli.build_parser()  # imports every command's module
    tmp = tempfile.mkdtemp(prefix="stcn-forks-")
    running: dict[int, int] = {}
    codes: dict[int, int] = {}
    pending = list(range(len(cases)))
    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(cases[i], f"{tmp}/{i}.out", f"{tmp}/{i}.err")
            running[pid] = i
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    results = []
    for i in range(len(cases)):
        with open(f"{tmp}/{i}.out", errors="replace") as o, open(f"{tmp}/{i}.err", errors="replace") as e:
            results.append({"returncode": codes[i], "stdout": o.read(), "stderr": e.read()})
    with open(results_path, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main()
