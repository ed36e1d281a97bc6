"""Fault injection for the Ray Train path: a worker backend that dies once, as a preempted node would."""

from __future__ import annotations

import os

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
