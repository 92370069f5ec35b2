"""`extract features --executor slurm|local --shards N`: one job array, task i the ordinary sharded,
resumable extraction `--shard i/N` into the one store (extract/features.py: each rank holds its own
store lock and commits per video, so tasks never touch each other's files and a task killed at any
point resumes from the store's commit records when it runs again).

Logs and submitit's pickles go to the store's side folder, `<store dir>/<store name>.<group>.logs/`
(beside the `.extract.json` configs the tasks write). `--wait` waits for the array, then prints the
summary of the whole store job and fails naming each failed task and its log.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from stagecache.extract.features_args import ExtractArgs
from stagecache.pipelines.launch.executors import (ClusterArgs, LaunchError, Outcome, Task, job_ids, make_executor,
                                                   submit_array, wait_all)

ARRAY = "Job arrays (--executor local / slurm)"  # the --help heading
IN_PROCESS = "inline"
# ExtractArgs fields that are paths: made absolute for the tasks, which may start in another directory.
_PATHS = ("videos", "label_map", "out", "annotations", "proposals", "objects_file", "object_classes", "checkpoint",
          "excluded")


@dataclass(kw_only=True)
class ExtractFeaturesArgs(ExtractArgs, ClusterArgs):
    """The `extract features` command: `ExtractArgs` (the job), how it is launched, and the cluster
    options (`ClusterArgs`)."""

    executor: str = field(default=IN_PROCESS, metadata={
        "help": "inline: this process (one shard, --shard); local: a job array of --shards processes on this "
                "machine (submitit); slurm: a Slurm job array of --shards tasks.", "metavar": "inline|local|slurm",
        "group": ARRAY})
    shards: int = field(default=1, metadata={
        "help": "Tasks of the array (--executor local / slurm): task i extracts --shard i/N.", "group": ARRAY})
    wait: bool = field(default=False, metadata={
        "help": "Wait for the array, print the summary and fail naming each failed task and its log.",
        "group": ARRAY})

    def __post_init__(self):
        # The launch first: a bad executor is refused before the job's own (slower) checks.
        self.check_executor(self.executor, IN_PROCESS)
        if self.shards < 1:
            raise LaunchError(f"--shards must be >= 1, got {self.shards}")
        if self.executor == IN_PROCESS:
            if self.shards != 1 or self.wait:
                raise LaunchError("--shards and --wait are for --executor local / slurm (in this process: --shard i/n)")
            super().__post_init__()
            return
        if self.shard is not None:
            raise LaunchError("--shard is set per task by --executor local / slurm: give --shards N instead")
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(ExtractArgs)}
        # The tasks' nodes decide whether CUDA is there, not this one (ExtractArgs falls back to the CPU).
        device, self.device = self.device, "cpu"
        super().__post_init__()
        self.device = device
        if "://" in str(self.out):
            raise LaunchError(f"--out {self.out}: --executor {self.executor} writes its logs beside the store "
                              "and needs the store's locks: give a (shared) directory path")
        # What each task builds its ExtractArgs from: the options as given (ExtractArgs resolves some,
        # e.g. a jhmdb split name, and must see them as given again), paths absolute, the out resolved.
        given["out"] = self.out
        for name in _PATHS:
            if given[name] is not None:
                given[name] = str(Path(given[name]).absolute())
        # --restart happens once, here, before the array (launch_extract); the tasks resume.
        self.task_kwargs = dict(given, progress=False, restart=False)


def logs_dir(args: ExtractFeaturesArgs) -> Path:
    out = Path(args.out).absolute()
    return out.parent / f"{out.stem}.{args.group}.logs"


def extract_shard(kwargs: dict, shard: str) -> dict:
    """One task of the array: `--shard i/n` of the extraction (a job's function: module level)."""
    from stagecache.extract.features import run_extract

    return run_extract(ExtractArgs(**dict(kwargs, shard=shard)))


def launch_extract(args: ExtractFeaturesArgs, echo=print) -> dict:
    """Submit the array; with `args.wait`, wait and summarise. Returns {"jobs", "logs", "outcomes",
    "summary", "failed_tasks"} (the last three only after waiting)."""
    logs = logs_dir(args)
    executor = make_executor(args.executor, logs, args, job_name=f"extract-{args.group}")  # refusals first
    _check_store(args, echo)
    n = args.shards
    before = _size(args.out)
    jobs = submit_array(executor, [Task(extract_shard, args.task_kwargs, f"{i}/{n}") for i in range(n)])
    echo(f"extract features: submitted job {job_ids(jobs)}: {n} task(s) on {args.executor} -> {args.out} "
         f"[{args.group}]; logs: {logs}/<job id>_0_log.out|err")
    result = {"jobs": [str(j.job_id) for j in jobs], "logs": str(logs)}
    if not args.wait:
        return result
    outcomes = wait_all(jobs)
    summary = merge_summaries(args, outcomes)
    # Each task measures the whole store's growth, the others' writes included: the array's is the one number.
    summary["bytes_written"] = _size(args.out) - before
    echo(format_summary(summary))
    for f in summary["failed"]:
        echo(f"  failed: {f['error']}")
    failed = [o for o in outcomes if o.error]
    for o in failed:
        echo(f"  {o.describe()}")
    return dict(result, outcomes=outcomes, summary=summary, failed_tasks=failed)


def merge_summaries(args: ExtractFeaturesArgs, outcomes: list[Outcome]) -> dict:
    """The tasks' run_extract summaries as one (counts summed, failures listed)."""
    s = {"videos": 0, "done": 0, "skipped": 0, "failed": [], "keyframes": 0, "boxes": 0, "objects": 0,
         "bytes_written": 0, "keyframes_past_end": [], "store": args.out, "group": args.group,
         "tasks": len(outcomes), "failed_tasks": sum(bool(o.error) for o in outcomes)}
    for o in outcomes:
        r = o.result if isinstance(o.result, dict) else {}
        for k in ("videos", "done", "skipped", "keyframes", "boxes", "objects", "bytes_written"):
            s[k] += int(r.get(k, 0))
        s["failed"] += r.get("failed", [])
        s["keyframes_past_end"] += r.get("keyframes_past_end", [])
    return s


def format_summary(s: dict) -> str:
    from stagecache.extract.store import format_bytes

    return (f"extract features [{s['group']}] {s['tasks']} task(s), {s['failed_tasks']} failed: videos {s['videos']} "
            f"(done {s['done']}, skipped {s['skipped']}, failed {len(s['failed'])}); keyframes {s['keyframes']}; "
            f"boxes {s['boxes']}; objects {s['objects']}; written {format_bytes(s['bytes_written'])} -> {s['store']}")


def _size(path: str) -> int:
    root = Path(path)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


def _check_store(args: ExtractFeaturesArgs, echo) -> None:
    """The store's recorded options against these, once before the array (every task would refuse
    alike), and `--restart` done here so that no task drops another's data."""
    from stagecache.extract.features_record import StoreState, check_options, restart_groups

    if args.allow_config_mismatch:
        return
    drop = check_options(args, StoreState.read(args.out), args.group)
    if drop:
        restart_groups(args.out, drop, log=echo)
