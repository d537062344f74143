"""What the tests of one test run share between pytest-xdist's worker processes (pytest.ini runs the tests in
several): each worker has its own session, so a session fixture runs once per worker. What is costly to make and never
changed by a test is made once per test run instead, in the folder above the workers' own temporary folders."""
import fcntl
import json
import os

IN_WORKER = "PYTEST_XDIST_WORKER" in os.environ
if IN_WORKER:
    # Several workers share the cores: one torch thread each (a subprocess inherits it) instead of every worker
    # spreading over every core and the threads of all of them fighting for the same cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def run_scratch(tmp_path_factory):
    """The temporary folder of the whole test run (shared by its workers)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if IN_WORKER else base


def made_once(tmp_path_factory, name, make):
    """``make(folder)``'s JSON-able result, computed by the first worker that asks for ``name`` in this test run
    and read back by the others (they wait for it under a lock). ``folder`` is the run's shared folder for it."""
    folder = run_scratch(tmp_path_factory) / f"once_{name}"
    folder.mkdir(exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / ".result.json"
        if not done.exists():
            done.write_text(json.dumps(make(str(folder))))
        return json.loads(done.read_text())
