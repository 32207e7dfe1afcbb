"""Crash recovery with real kills: a child process applies many deletion requests through the ledger and is
SIGKILLed at a random moment, several rounds on the same run folder. After each kill the reopened state must equal
base + Σ over the applied requests' approximators, nothing applied twice, pending requests rolled back, and the killed
request re-sendable (applied once)."""

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from unlearn_audit.data import load_dataset, prepare, split_dataset
from unlearn_audit.deletion import DurableUnlearner, save_trained_run
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig

torch.set_num_threads(1)

ROUNDS = 10
PER_REQUEST = 2  # records per request

# The child imports torch once (seconds on a busy machine), then forks one worker per round: each worker is a fresh
# process that opens the run and applies requests req-0000, req-0001, ... until the test SIGKILLs it. The child
# reaps the worker and reports how it ended.
CHILD = textwrap.dedent("""
    import os, sys, traceback
    import torch
    torch.set_num_threads(1)
    from unlearn_audit.deletion import DurableUnlearner
    run_dir, k = sys.argv[1], int(sys.argv[2])
    print("zygote", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                print("pid", os.getpid(), flush=True)
                du = DurableUnlearner.open(run_dir)
                ids = [str(r) for r in du.run.record_ids]
                print("ready", len(du.recovered), flush=True)
                for i in range(len(ids) // k):
                    r = du.forget(ids[i * k:(i + 1) * k], epsilon=1.0, delta=1e-5, request_id=f"req-{i:04d}")
                    print("done", i, int(r.applied_now), flush=True)
                print("finished", flush=True)
            except BaseException:
                traceback.print_exc(file=sys.stdout)
                sys.stdout.flush()
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("reaped", status, flush=True)
""")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    ds = load_dataset("digits")
    sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=5,
                               max_train=400), standardize=True, unit_norm=True)
    tr = sp.train
    x, y = torch.as_tensor(tr.x), torch.as_tensor(tr.y, dtype=torch.int64)
    model = build_model("softmax", tr.feature_shape, ds.n_classes, seed=5)
    u = HFOCUUnlearner(model, SGDConfig(epochs=2, batch_size=32, lr=1.0, lam=0.05, seed=5),
                       bound="worst_case").fit(x, y, tr.ids)
    out = tmp_path_factory.mktemp("crash")
    save_trained_run(out / "trained_run", u)
    return out


class Child:
    """The zygote process; its stdout is read unbuffered (os.read) so select() never misses buffered lines."""

    def __init__(self, run_dir):
        self.lines: list[str] = []
        self.buf = b""
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(PER_REQUEST)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.readline(120, "zygote")

    def readline(self, timeout: float, expect: str) -> str:
        """The next output line starting with ``expect`` (earlier lines go to ``self.lines``)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode().strip()
                if line.startswith(expect):
                    return line
                self.lines.append(line)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"child: no '{expect}' line in {timeout} s; got {self.lines[-5:]}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise AssertionError(f"child exited early; its output: {self.lines[-10:]}")
            self.buf += chunk

    def round(self, delay: float) -> list[str]:
        """Fork a worker, SIGKILL it ``delay`` s after it started; return its output lines."""
        self.lines = []
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        pid = int(self.readline(60, "pid").split()[1])
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - finished already
            pass
        reaped = self.readline(60, "reaped")
        status = int(reaped.split()[1])
        assert (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL) or status == 0, self.lines
        return self.lines

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def test_random_sigkill_rounds_recover_exactly(run_dir):
    rnd = random.Random(20240601)
    base_run = None
    stats = {"kills": 0, "pending_rolled_back": 0, "resent_after_kill": 0}
    reported_done: set[int] = set()
    child = Child(run_dir)
    for round_ in range(ROUNDS):
        delay = rnd.uniform(0.0, 0.25)
        lines = child.round(delay)
        stats["kills"] += 1
        stats["killed_before_ready"] = stats.get("killed_before_ready", 0) + (not any(
            ln.startswith("ready") for ln in lines))
        reported_done |= {int(ln.split()[1]) for ln in lines if ln.startswith("done ") and len(ln.split()) == 3}

        with DurableUnlearner.open(run_dir) as du:
            run = du.run
            if base_run is None:
                base_run = run
            ids = [str(r) for r in run.record_ids]
            n_req = len(ids) // PER_REQUEST
            applied = du.ledger.applied()
            k = len(applied)
            # applied requests are exactly a prefix req-0000..req-(k-1), in order, each once
            assert [e.request_id for e in applied] == [f"req-{i:04d}" for i in range(k)]
            assert [e.applied_seq for e in applied] == list(range(1, k + 1))
            # nothing the child reported done is lost
            assert reported_done <= set(range(k)), (sorted(reported_done)[-3:], k)
            # at most the one in flight was pending, and it was rolled back
            assert len(du.recovered) <= 1
            if du.recovered:
                assert du.recovered[0].request_id == f"req-{k:04d}"
                stats["pending_rolled_back"] += 1
            assert du.ledger.pending() == []
            du.ledger.verify()
            deleted = ids[:k * PER_REQUEST]
            assert sorted(du.deleted_ids) == sorted(deleted) and len(set(du.deleted_ids)) == len(deleted)
            # the re-derived state = base + Σ approximators of the applied requests (independent computation)
            a = torch.as_tensor(run.approximator_rows(np.arange(run.n_approximators)), dtype=torch.float64)
            expect = torch.as_tensor(run.weights, dtype=torch.float64) + a[:0].sum(0)
            if deleted:
                rows = run.row_of[[run.position_of[r] for r in deleted]][::-1].copy()
                expect = expect + a[torch.as_tensor(rows)].sum(0)
            assert np.allclose(du.noiseless_state(), expect.numpy(), atol=1e-6, rtol=0)
            # the killed (next) request can be re-sent and applies once
            if k < n_req:
                nxt = ids[k * PER_REQUEST:(k + 1) * PER_REQUEST]
                r = du.forget(nxt, epsilon=1.0, delta=1e-5, request_id=f"req-{k:04d}")
                assert r.applied_now and r.applied_seq == k + 1
                again = du.forget(nxt, epsilon=1.0, delta=1e-5, request_id=f"req-{k:04d}")
                assert not again.applied_now and again.model_hash_after == r.model_hash_after
                assert du.n_applied == k + 1
                stats["resent_after_kill"] += 1
            # an earlier request re-sent: nothing applied again
            if k > 0:
                first = du.forget(ids[:PER_REQUEST], epsilon=1.0, delta=1e-5, request_id="req-0000")
                assert not first.applied_now
    child.close()
    print(f"\ncrash rounds: {stats}; requests applied at the end: {k + 1 if k < n_req else k} of {n_req}")
    assert stats["kills"] == ROUNDS and stats["resent_after_kill"] >= 1
