"""submitit executors by name, the cluster options every launching command shares, and a job
array's life: submit, wait, summarise what failed with its log.

Two executors run jobs (`EXECUTORS`, name -> factory): `slurm` (sbatch, one array) and `local`
(submitit's LocalExecutor: the same array as processes on this machine; what the tests use). A
command adds its own in-process name (`extract features`: inline, `ablate`: process) and checks
its arguments with `check_executor` before anything is submitted or written.

Each job is a `Task`: a module-level function and its (picklable) arguments. On a timeout or a
pre-emption submitit calls `Task.checkpoint`, which resubmits the same call: the jobs here are
resumable (an extraction shard redoes only the videos its store lacks, a training run resumes from
last.pt), so nothing needs saving beyond what they commit anyway.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stagecache.core.errors import UserError

SLURM = "Slurm (--executor slurm)"  # the --help heading of the cluster options
# LocalExecutor kills a job at its timeout: on one's own machine nothing should time out (a week).
LOCAL_TIMEOUT_MIN = 7 * 24 * 60


class LaunchError(UserError):
    """A bad executor, cluster option or job request (nothing was submitted)."""


def parse_sbatch(pairs: Iterable[str]) -> dict[str, str]:
    """`--sbatch qos=high --sbatch exclude=node7` -> {"qos": "high", "exclude": "node7"}."""
    out = {}
    for p in pairs:
        key, sep, value = str(p).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE (an sbatch option without its dashes), got {p!r}")
        out[key] = value
    return out


@dataclass(kw_only=True)
class ClusterArgs:
    """What a Slurm job asks for (every launching command's dataclass derives from this one). The
    defaults ask nothing a plain Slurm install lacks: no GPUs, the cluster's default partition,
    CPUs and memory."""

    partition: str | None = field(default=None, metadata={
        "help": "Slurm partition.", "show_default": "the cluster's default", "group": SLURM})
    gpus: int = field(default=0, metadata={
        "help": "GPUs per task (sbatch --gpus-per-node; one task per node).", "range": {"min": 0}, "group": SLURM})
    cpus: int | None = field(default=None, metadata={
        "help": "CPUs per task (sbatch --cpus-per-task).", "range": {"min": 1}, "show_default": "the cluster's",
        "group": SLURM})
    mem_gb: float | None = field(default=None, metadata={
        "help": "Memory per task in GB (sbatch --mem).", "range": {"min": 0, "min_open": True},
        "show_default": "the cluster's", "group": SLURM})
    time_min: int = field(default=60, metadata={
        "help": "Time limit per task in minutes; a task that reaches it (or is pre-empted) requeues itself and "
                "resumes.", "range": {"min": 1}, "group": SLURM})
    array_parallelism: int = field(default=256, metadata={
        "help": "Tasks of the array running at once (sbatch --array=...%N).", "range": {"min": 1}, "group": SLURM})
    max_timeouts: int = field(default=10, metadata={
        "help": "Requeues after a time-out before a task counts as failed (pre-emptions do not count).",
        "range": {"min": 0}, "group": SLURM})
    sbatch: dict = field(default_factory=dict, metadata={
        "help": "Extra sbatch parameter for every task (repeatable), e.g. --sbatch qos=high --sbatch account=me.",
        "parse": parse_sbatch, "group": SLURM})

    def cluster_options_given(self) -> list[str]:
        """The cluster options set to other than their defaults, as their --option names."""
        return [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(ClusterArgs)
                if getattr(self, f.name) != _default(f)]

    def check_executor(self, executor: str, in_process: str) -> None:
        """`executor` is `in_process` or one of `EXECUTORS`; Slurm options only with slurm; submitit
        importable where it is needed. Raises LaunchError (one line) before anything is written."""
        valid = [in_process, *EXECUTORS]
        if executor not in valid:
            raise LaunchError(f"--executor: unknown executor {executor!r}; valid: {', '.join(valid)}")
        given = self.cluster_options_given()
        if given and executor != "slurm":
            raise LaunchError(f"{', '.join(given)}: Slurm option(s), only for --executor slurm "
                              f"(not --executor {executor})")
        if executor != in_process:
            require_submitit(executor)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def require_submitit(executor: str):
    try:
        import submitit
    except ImportError:
        raise LaunchError(f"--executor {executor} needs submitit, which is not installed "
                          "(pip install 'submitit>=1.5')") from None
    return submitit


def _mem(gb: float) -> str:
    return f"{int(gb)}G" if gb == int(gb) else f"{int(round(gb * 1024))}M"


def _slurm(folder: Path, cluster: ClusterArgs, name: str):
    submitit = require_submitit("slurm")
    try:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=cluster.max_timeouts)
    except RuntimeError as e:  # no srun on PATH: not a Slurm node
        raise LaunchError(f"--executor slurm: {e}") from None
    params: dict = {"job_name": name, "time": cluster.time_min, "array_parallelism": cluster.array_parallelism}
    optional = {"partition": cluster.partition, "gpus_per_node": cluster.gpus or None, "cpus_per_task": cluster.cpus,
                "mem": None if cluster.mem_gb is None else _mem(cluster.mem_gb),
                "additional_parameters": dict(cluster.sbatch) or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    try:
        ex.update_parameters(**params)
    except ValueError as e:  # submitit checks the sbatch text it would write
        raise LaunchError(f"--executor slurm: {' '.join(str(e).split())}") from None
    return ex


def _local(folder: Path, cluster: ClusterArgs, name: str):
    submitit = require_submitit("local")
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=cluster.max_timeouts)
    ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    return ex


# name -> factory(folder, cluster options, job name) -> a submitit executor
EXECUTORS: dict[str, Callable] = {"local": _local, "slurm": _slurm}


def make_executor(name: str, folder: str | Path, cluster: ClusterArgs, job_name: str):
    """The submitit executor `name` writing its pickles and logs under `folder`."""
    try:
        factory = EXECUTORS[name]
    except KeyError:
        raise LaunchError(f"--executor: unknown executor {name!r}; valid: {', '.join(EXECUTORS)}") from None
    return factory(Path(folder).absolute(), cluster, job_name)


class Task:
    """`fn(*args)` as a job: module-level `fn` and picklable `args`. A task that times out or is
    pre-empted is submitted again as it is (`checkpoint`): `fn` resumes from what it committed."""

    def __init__(self, fn: Callable, *args):
        self.fn, self.args = fn, args

    def __call__(self):
        return self.fn(*self.args)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(Task(self.fn, *self.args))

    def __repr__(self) -> str:
        return f"Task({getattr(self.fn, '__qualname__', self.fn)})"


def submit_array(executor, tasks: Sequence[Task]) -> list:
    """One job array (Slurm: one sbatch; local: one process each) of `tasks`, in order."""
    import submitit

    with executor.batch():
        jobs = [executor.submit(t) for t in tasks]
    if isinstance(executor, submitit.LocalExecutor):
        for job in jobs:  # a killed task leaves no result: on this machine's disk there is no lag to wait out (15 s)
            job._results_timeout_s = 1
    return jobs


def job_ids(jobs: Sequence) -> str:
    """'1234 (tasks 1234_0..1234_2)' for a Slurm array, the ids one by one otherwise."""
    ids = [str(j.job_id) for j in jobs]
    heads = {i.split("_")[0] for i in ids}
    if len(ids) > 1 and len(heads) == 1 and all("_" in i for i in ids):
        return f"{ids[0].split('_')[0]} (tasks {ids[0]}..{ids[-1]})"
    return ", ".join(ids)


def log_path(job) -> str:
    """The file a job's errors go to (stdout beside it, *.out)."""
    return str(job.paths.stderr)


@dataclass
class Outcome:
    """How one task of an array ended."""

    index: int
    job_id: str
    log: str
    result: object = None
    error: str = ""  # one line; empty when the task succeeded

    def describe(self) -> str:
        return f"task {self.index} (job {self.job_id}) failed: {self.error}; log: {self.log}"


def _reason(e: BaseException) -> str:
    """One line of a submitit job error: the last line of the task's traceback, or the first line
    of anything else (a task killed without a result)."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    if "failed during processing" in (lines[0] if lines else ""):
        trace = [l for l in lines[1:] if not set(l) <= {"-"}]
        cut = next((i for i, l in enumerate(trace) if l.startswith("You can check full logs")), len(trace))
        if cut:
            return trace[cut - 1]
    if len(lines) > 1 and "has not produced any output" in lines[1]:  # killed: "Job 12 ... with path P" + why
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else type(e).__name__


def wait_all(jobs: Sequence) -> list[Outcome]:
    """Wait for every job; one Outcome each, in order (a failure never stops the waiting)."""
    out = []
    for i, job in enumerate(jobs):
        try:
            out.append(Outcome(i, str(job.job_id), log_path(job), result=job.result()))
        except Exception as e:  # submitit's FailedJobError / UncompletedJobError: the task's own failure
            out.append(Outcome(i, str(job.job_id), log_path(job), error=_reason(e)))
    return out
