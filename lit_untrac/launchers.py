"""Running an experiment's independent per-dataset jobs on a Ray cluster.

``launcher: ray`` sends each job (a leave-out retraining, an unlearning run,
a baseline) to Ray as one task with the CPUs and GPUs it asks for
(``ray.cpus_per_job``, ``ray.gpus_per_job``). ``ray.address`` names an
existing cluster; without it a local Ray instance is started (with
``ray.num_cpus`` CPUs). Every job writes its results into the experiment
folder, so the workers must see the same file system as the driver (one
machine, or a shared disk on a cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lit_untrac.errors import UserError


class RemoteJobError(RuntimeError):
    """A job failed on a Ray worker; the message is the worker's one-line reason."""


def _run_remote(config_text: str, job) -> str | None:
    """Runs on a Ray worker: rebuild the experiment from its dumped config and
    run one job. Returns None, or the failure's one-line reason."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lit_untrac.config import experiment_parser
    from lit_untrac.experiment import execute_job, failure_reason
    from lit_untrac.stages.common import Context

    parser = experiment_parser()
    ctx = Context(parser, parser.parse_string(config_text))
    try:
        execute_job(ctx, job)
    except Exception as error:  # reported to the driver, which records it
        return failure_reason(error)
    return None


class RayLauncher:
    """Runs jobs as Ray tasks, as many at once as the cluster's resources allow."""

    def __init__(self, ctx) -> None:
        try:
            import ray
        except ImportError as err:
            raise UserError("launcher: ray needs Ray: pip install 'lit-untrac[ray]'") from err
        self.ray = ray
        self.settings = ctx.cfg.ray
        self.config_text = ctx.parser.dump(ctx.cfg, skip_none=False)
        if self.settings.cpus_per_job <= 0 or self.settings.gpus_per_job < 0:
            raise UserError(
                f"ray.cpus_per_job={self.settings.cpus_per_job} must be > 0 and "
                f"ray.gpus_per_job={self.settings.gpus_per_job} >= 0"
            )

    def _connect(self) -> bool:
        """Connect to the cluster (or start a local one); True if we started it."""
        if self.ray.is_initialized():
            return False
        kwargs = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
        if self.settings.address:
            self.ray.init(address=self.settings.address, **kwargs)
        else:
            self.ray.init(num_cpus=self.settings.num_cpus, **kwargs)
        return True

    def run(self, jobs: Sequence, execute: Callable, on_done: Callable) -> None:
        if not jobs:
            return
        started = self._connect()
        try:
            remote = self.ray.remote(
                num_cpus=self.settings.cpus_per_job,
                num_gpus=self.settings.gpus_per_job,
                max_retries=0,
            )(_run_remote)
            pending = {
                remote.remote(self.config_text, job): job for job in _in_dependency_order(jobs)
            }
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    reason = self.ray.get(ready[0])
                except Exception as error:  # the worker died
                    on_done(
                        (job, RemoteJobError(f"the Ray task died: {str(error).splitlines()[0]}"))
                    )
                    continue
                on_done((job, None if reason is None else RemoteJobError(reason)))
        finally:
            if started:
                self.ray.shutdown()


def _in_dependency_order(jobs: Sequence) -> list:
    """Jobs need nothing from each other (theta_0 is trained before), so the
    order only decides which start first: the longest stages first."""
    weight = {"ground_truth": 0, "untrac": 1, "untrac_inv": 2, "baselines": 3}
    return sorted(jobs, key=lambda job: weight.get(job.stage, 9))
