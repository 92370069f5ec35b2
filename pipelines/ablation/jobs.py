"""A sweep's runs as jobs: which runs are finished, partial or new (`run_state`), one run
(`train_run`: train-head, then its hparams summary), and every pending run executed by the
executor asked for (`execute`):

  process  this machine, a process pool of `--jobs` workers (1: in this process);
  local    one submitit job per run on this machine (pipelines/launch/executors.py);
  slurm    one Slurm job per run, all in one array; a run that times out or is pre-empted
           requeues itself and resumes from its last.pt.

The sweep waits for its jobs in every case: the tables need every run. A failed run is listed with
its job id and log.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from stagecache.core.atomic import atomic_open
from stagecache.pipelines.ablation.ablate_args import IN_PROCESS
from stagecache.pipelines.ablation.spec import AFTER_TRAIN, Config
from stagecache.pipelines.launch.executors import ClusterArgs, Task, job_ids, make_executor, submit_array, wait_all
from stagecache.pipelines.training.train import TrainArgs, train

HPARAMS_DONE = "hparams.json"  # in a run directory: its hparams summary is written
# Fields that do not change what a run computes: a rerun may differ in them.
_VOLATILE = {"progress", "tensorboard", "command_line", "resume", "device", "out_dir", "train_store", "val_store"} | AFTER_TRAIN


@dataclass
class Run:
    config: Config
    seed: int
    run_dir: str
    targs: dict  # TrainArgs keyword arguments
    skip_reason: str = ""

    @property
    def name(self) -> str:
        return Path(self.run_dir).name

    def hparams(self) -> dict:
        """What TensorBoard's HPARAMS view compares the runs of a sweep by (scalars and strings)."""
        hp = {"config": self.config.name, "head": self.config.head, "seed": self.seed}
        hp.update({f"head_args/{k}": _scalar(v) for k, v in sorted(self.config.head_args.items())})
        hp.update({f"grid/{k}": _scalar(v) for k, v in sorted(self.config.grid_values.items())})
        return hp


def _scalar(v):
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True, default=str)


def _identity(targs: dict) -> dict:
    """The TrainArgs of a run that decide its result (JSON round-tripped)."""
    d = asdict(TrainArgs(**targs))
    return json.loads(json.dumps({k: v for k, v in d.items() if k not in _VOLATILE}))


def run_state(run_dir: str | Path, targs: dict) -> str:
    """'done', 'partial' (resume) or 'new'. A run dir made by other arguments is an error."""
    d = Path(run_dir)
    marker = d / "ablate_run.json"
    if marker.exists():
        saved, want = json.loads(marker.read_text()), _identity(targs)
        if saved != want:
            diff = sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
            raise ValueError(f"{d} holds a run with other arguments (differs in {diff}); "
                             "use another --out or remove that run directory")
    if (d / "summary.json").exists():
        return "done"
    if (d / "last.pt").exists():
        return "partial"
    return "new"


def train_run(targs: dict, threads: int, hparams: dict) -> dict:
    """One run (in this process, a pool worker or a job). Its state is read here, not when the sweep
    was planned: a requeued job resumes from the last.pt its killed attempt wrote."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    d = Path(targs["out_dir"])
    resume = run_state(d, targs) == "partial"
    d.mkdir(parents=True, exist_ok=True)
    with atomic_open(d / "ablate_run.json") as f:  # run_state reads it back: never half a file
        f.write(json.dumps(_identity(targs), indent=2))
    summary = train(TrainArgs(**dict(targs, resume=resume)))
    _write_hparams(d, hparams, summary)
    return summary


def _write_hparams(run_dir: Path, hparams: dict, summary: dict) -> None:
    """The run's hparams summary, then `hparams.json` saying it is there: a sweep killed between a
    run's summary.json and its hparams writes them on the rerun (`_pending`)."""
    from stagecache.pipelines.training.tensorboard import write_hparams

    best = summary.get("best_val_map") if isinstance(summary, dict) else None
    if best is None:
        return
    metrics = {"hparam/best_val_map": float(best)}
    write_hparams(run_dir, hparams, metrics)
    with atomic_open(Path(run_dir) / HPARAMS_DONE) as f:
        f.write(json.dumps({"hparams": hparams, "metrics": metrics}, indent=2))


def _pending(runs: list[Run], status: dict[str, str], echo) -> list[Run]:
    out = []
    for r in runs:
        if r.skip_reason:
            status[r.name] = r.skip_reason
            continue
        if run_state(r.run_dir, r.targs) == "done":
            status[r.name] = "done"
            echo(f"[ablate] {r.name}: finished already, skipped")
            if not (Path(r.run_dir) / HPARAMS_DONE).exists():
                _write_hparams(Path(r.run_dir), r.hparams(), json.loads((Path(r.run_dir) / "summary.json").read_text()))
            continue
        out.append(r)
    return out


def make_submitter(executor: str, logs: str | Path, cluster: ClusterArgs):
    """The submitit executor of the sweep's jobs, None for `process`; made before the sweep writes
    anything, so that a refusal (no srun, a bad sbatch parameter) leaves nothing behind."""
    return None if executor == IN_PROCESS else make_executor(executor, logs, cluster, job_name="ablate")


def execute(runs: list[Run], *, jobs: int = 1, submitter=None, threads: int = 0, echo=print) -> dict[str, str]:
    """Train every pending run (`submitter`: a submitit executor from `make_submitter`, one job per
    run, torch using `threads` threads (0: torch's default, >0: that many; -1: this machine's cores
    shared); None: in this process, or a pool of `jobs`). Returns run name -> status ('done',
    'failed: ...', 'skipped: ...')."""
    status: dict[str, str] = {}
    pending = _pending(runs, status, echo)
    if not pending:
        return status
    if submitter is not None:
        if threads < 0:
            threads = max(1, (os.cpu_count() or 1) // len(pending))
        return _execute_jobs(pending, submitter, threads, status, echo)
    if jobs == 1:
        for r in pending:
            echo(f"[ablate] {r.name}: training")
            try:
                train_run(r.targs, 0, r.hparams())
                status[r.name] = "done"
            except Exception as e:  # one failing configuration must not lose the rest of a sweep
                status[r.name] = f"failed: {type(e).__name__}: {e}"
                echo(f"[ablate] {r.name} failed:\n{traceback.format_exc()}")
        return status
    # Spawned workers: CUDA cannot be used in forked children; each worker gets its share of the cores.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(train_run, dict(r.targs, progress=False), threads, r.hparams()): r for r in pending}
        for fut in cf.as_completed(futures):
            r = futures[fut]
            try:
                fut.result()
                status[r.name] = "done"
                echo(f"[ablate] {r.name}: done")
            except Exception as e:
                status[r.name] = f"failed: {type(e).__name__}: {e}"
                echo(f"[ablate] {r.name} failed: {status[r.name]}")
    return status


def _execute_jobs(pending: list[Run], submitter, threads: int, status: dict, echo) -> dict:
    tasks = [Task(train_run, dict(r.targs, progress=False), threads, r.hparams()) for r in pending]
    submitted = submit_array(submitter, tasks)
    echo(f"[ablate] submitted job {job_ids(submitted)}: {len(pending)} run(s); logs: {submitter.folder}")
    for r, o in zip(pending, wait_all(submitted)):
        if o.error:
            status[r.name] = f"failed: {o.error} (job {o.job_id}, log {o.log})"
            echo(f"[ablate] {r.name} failed: job {o.job_id}: {o.error}; log: {o.log}")
        else:
            status[r.name] = "done"
            echo(f"[ablate] {r.name}: done (job {o.job_id})")
    return status
