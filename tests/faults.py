"""Fault injection: a Ray Train worker backend that dies once, as a preempted node would; a Tune
search stopped part-way, as a user or a dying job would stop it."""

from __future__ import annotations

import json
import os
import signal

from ray.tune import Callback

from raydd.pipeline.train import RayTrainBackend

MARKER = "fault-injected"


class DieOnceAt(RayTrainBackend):
    """The last worker exits hard after ``iteration`` the first time it gets there (a marker file in the
    run directory remembers that it did)."""

    def __init__(self, *, rank: int, world: int, iteration: int) -> None:
        super().__init__(rank, world)
        self.iteration = iteration

    def after_step(self, run, done: int) -> None:
        if done == self.iteration and self.rank == self.world - 1 and not run.has(MARKER):
            run.write_json(MARKER, {"iteration": done, "rank": self.rank})
            os._exit(1)


class RecordPlacement(RayTrainBackend):
    """Each worker start appends its rank, node, pid and the iteration it continues from (0: a fresh
    start) to ``placement.jsonl`` in the run directory: where the workers ran, how often they were
    (re)started, and from which checkpoint."""

    def restore(self, run):
        import ray

        restored = super().restore(run)
        row = {"rank": self.rank, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
               "from_iteration": 0 if restored is None else int(restored[1])}
        with open(run.file(PLACEMENT), "a") as log:
            log.write(json.dumps(row) + "\n")
        return restored


PLACEMENT = "placement.jsonl"


class InterruptSearch(Callback):
    """Stops a Tune search the way Ctrl+C on its driver does, once ``after`` trials have finished.

    The signal is SIGUSR1, which Tune handles like SIGINT (save the experiment, stop the running trials,
    return) without pytest taking it as a keyboard interrupt. ``marker`` (a JSON file) records the
    trials finished by then and keeps a restored search, which gets this callback back from Tune's
    saved state, from being stopped again."""

    def __init__(self, marker: str, after: int) -> None:
        self.marker, self.after, self.finished = marker, after, []

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.finished.append(trial.trial_id)
        if len(self.finished) >= self.after and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                json.dump({"finished": self.finished}, f)
            os.kill(os.getpid(), signal.SIGUSR1)
