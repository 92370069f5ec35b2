"""pipelines/launch/executors.py and the launching commands' refusals: the Slurm submission file
submitit writes (sbatch itself mocked the way submitit's own tests mock it), a task's requeue
checkpoint, and bad input refused in one line before anything is submitted or written."""
import pickle
import sys
from pathlib import Path

import pytest

from stagecache.pipelines.commands.cli import run
from stagecache.pipelines.launch.executors import ClusterArgs, LaunchError, Task, parse_sbatch
from stagecache.pipelines.launch.extract_array import extract_shard


@pytest.fixture
def inputs(tmp_path):
    """What `extract features` checks exists; nothing here is ever extracted."""
    (tmp_path / "videos").mkdir()
    for name in ("lm.pbtxt", "train.csv"):
        (tmp_path / name).write_text("")
    return ["features", "--split", "train", "--videos", str(tmp_path / "videos"), "--label-map",
            str(tmp_path / "lm.pbtxt"), "--annotations", str(tmp_path / "train.csv"), "--random-init",
            "--out", str(tmp_path / "store" / "train.zarr"), "--no-progress"]


def _cli(capsys, name: str, argv: list[str]) -> tuple[int, str, str]:
    from stagecache.pipelines.commands.cli import load_command

    with pytest.raises(SystemExit) as e:
        run(load_command(name), argv, prog_name=name)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture
def mocked_slurm():
    """submitit's own mock of sbatch / sacct / srun (submitit/slurm/test_slurm.py)."""
    from submitit.core.test_core import MockedSubprocess
    from submitit.slurm.slurm import SlurmJob

    mock = MockedSubprocess(known_cmds=["srun"])
    with mock.context():
        yield mock
    SlurmJob.watcher.clear()


def test_the_slurm_array_carries_the_requested_resources(inputs, tmp_path, capsys, mocked_slurm):
    code, out, err = _cli(capsys, "extract", inputs + [
        "--executor", "slurm", "--shards", "3", "--partition", "gpu", "--gpus", "2", "--cpus", "8", "--mem-gb", "32",
        "--time-min", "90", "--array-parallelism", "2", "--sbatch", "qos=high", "--sbatch", "account=lab"])
    assert code == 0, err
    logs = tmp_path / "store" / "train.slowfast_r50.logs"
    assert "submitted job 12 (tasks 12_0..12_2): 3 task(s) on slurm" in out and str(logs) in out
    sbatch = (logs / "12_submission.sh").read_text().splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32G", "#SBATCH --time=90", "#SBATCH --array=0-2%2", "#SBATCH --qos=high",
                 "#SBATCH --account=lab", "#SBATCH --job-name=extract-slowfast_r50"):
        assert line in sbatch, line
    assert f"#SBATCH --output={logs}/%A_%a_0_log.out" in sbatch
    assert not (tmp_path / "store" / "train.zarr").exists()  # nothing ran: sbatch is mocked


def test_the_defaults_ask_a_plain_slurm_install_for_nothing_it_may_lack(tmp_path, mocked_slurm):
    from stagecache.pipelines.launch.executors import make_executor

    ex = make_executor("slurm", tmp_path, ClusterArgs(), "x")
    text = ex._make_submission_file_text("cmd", "uid")
    assert "--partition" not in text and "gpus" not in text and "--mem" not in text and "--time=60" in text


def test_a_task_pickles_and_requeues_itself_as_the_same_call(tmp_path):
    task = Task(extract_shard, {"split": "train"}, "1/3")
    back = pickle.loads(pickle.dumps(task))
    assert (back.fn, back.args) == (extract_shard, ({"split": "train"}, "1/3"))
    again = back.checkpoint()  # what submitit calls on a time-out or a pre-emption
    assert isinstance(again.function, Task) and (again.function.fn, again.function.args) == (back.fn, back.args)
    assert again.args == () and again.kwargs == {}


def test_a_local_array_waits_for_every_task_and_names_the_failed_one_with_its_log(tmp_path):
    import operator

    from stagecache.pipelines.launch.executors import make_executor, submit_array, wait_all

    ex = make_executor("local", tmp_path / "logs", ClusterArgs(), "t")
    jobs = submit_array(ex, [Task(operator.add, 1, 2), Task(operator.truediv, 1, 0), Task(operator.mul, 2, 3)])
    outcomes = wait_all(jobs)
    assert [o.result for o in outcomes] == [3, None, 6] and [bool(o.error) for o in outcomes] == [False, True, False]
    bad = outcomes[1]
    assert bad.error == "ZeroDivisionError: division by zero"
    assert bad.log == str(tmp_path / "logs" / f"{bad.job_id}_0_log.err") and "ZeroDivisionError" in Path(bad.log).read_text()
    assert bad.describe() == f"task 1 (job {bad.job_id}) failed: ZeroDivisionError: division by zero; log: {bad.log}"


def test_sbatch_pairs():
    assert parse_sbatch(["qos=high", "--exclude=n1,n2", "comment=a=b"]) == \
        {"qos": "high", "exclude": "n1,n2", "comment": "a=b"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sbatch(["qos"])


@pytest.mark.parametrize("extra, message", [
    (["--executor", "pbs"], "Error: --executor: unknown executor 'pbs'; valid: inline, local, slurm"),
    (["--executor", "local", "--shards", "0"], "Error: --shards must be >= 1, got 0"),
    (["--executor", "local", "--shards", "2", "--partition", "gpu"],
     "Error: --partition: Slurm option(s), only for --executor slurm (not --executor local)"),
    (["--gpus", "1"], "Error: --gpus: Slurm option(s), only for --executor slurm (not --executor inline)"),
    (["--shards", "2"], "Error: --shards and --wait are for --executor local / slurm"),
    (["--executor", "local", "--shards", "2", "--shard", "0/2"], "Error: --shard is set per task"),
    (["--executor", "slurm", "--shards", "2"], "Error: --executor slurm: Could not detect \"srun\""),
])
def test_extract_refuses_bad_launches_in_one_line_before_writing(inputs, tmp_path, capsys, extra, message):
    code, out, err = _cli(capsys, "extract", inputs + extra)
    assert code == 1 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "store").exists()


def test_submitit_missing_where_a_job_array_is_asked_for(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    code, _, err = _cli(capsys, "extract", inputs + ["--executor", "slurm", "--shards", "2"])
    assert code == 1 and err.startswith("Error: --executor slurm needs submitit, which is not installed")
    assert not (tmp_path / "store").exists()
    with pytest.raises(LaunchError, match="--executor local needs submitit"):
        ClusterArgs().check_executor("local", "process")


@pytest.mark.parametrize("extra, message", [
    (["--executor", "pbs"], "Error: --executor: unknown executor 'pbs'; valid: process, local, slurm"),
    (["--executor", "local", "--jobs", "2"], "Error: --jobs is for --executor process"),
    (["--time-min", "5"], "Error: --time-min: Slurm option(s), only for --executor slurm (not --executor process)"),
    (["--executor", "slurm"], "Error: --executor slurm: Could not detect \"srun\""),
])
def test_ablate_refuses_bad_launches_in_one_line_before_writing(tmp_path, capsys, extra, message):
    from stagecache.extract.synthetic import make_feature_store

    store = make_feature_store(tmp_path / "s.zarr", split="train", seed=0, n_videos=1, keyframes_per_video=2,
                               actor_dim=8, object_dim=4)
    code, _, err = _cli(capsys, "ablate", ["--train-store", str(store), "--val-store", str(store), "--out",
                                           str(tmp_path / "out"), "--head", "linear", "--epochs", "1"] + extra)
    assert code == 1 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
