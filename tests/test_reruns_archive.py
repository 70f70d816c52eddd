"""Reruns and the replay archive: the archive holds every answer a table is built from (replicates and arms too), so
a replay sends nothing; deleting a document reruns only the coding jobs whose shard it was in; and the SLURM tests
run only on the cluster .ci/slurm.sh started."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from test_slurm import foreign_cluster


def _scontrol(slurm_dir: Path) -> str:
    """What `scontrol show config` prints, in part, for the controller .ci/slurm.sh starts in `slurm_dir`."""
    return (
        "Configuration data as of 2026-12-06T19:00:00\n"
        "ClusterName             = qualcode-ci\n"
        f"JobCompLoc              = {slurm_dir}/log/jobcomp.log\n"
        "JobCompType             = jobcomp/filetxt\n"
        f"SlurmctldPidFile        = {slurm_dir}/slurmctld.pid\n"
    )


def _state(tmp_path: Path, pid: int) -> Path:
    """A state folder as .ci/slurm.sh leaves it, its controller's pid file naming `pid`."""
    slurm_dir = tmp_path / "qualcode-slurm"
    (slurm_dir / "log").mkdir(parents=True)
    (slurm_dir / "slurmctld.pid").write_text(f"{pid}\n")
    return slurm_dir


def test_the_slurm_tests_run_on_the_cluster_slurm_sh_started(tmp_path):
    slurm_dir = _state(tmp_path, os.getpid())  # a process that is running
    assert foreign_cluster(slurm_dir, _scontrol(slurm_dir)) is None


def test_the_slurm_tests_leave_another_cluster_alone(tmp_path):
    """A site's own SLURM answers: its job-completion log is elsewhere (or it keeps none); the tests must skip, naming
    the log they expected, not fail on a FileNotFoundError for it."""
    ours = _state(tmp_path, os.getpid())
    site = _scontrol(Path("/var/spool/slurm")).replace("jobcomp/filetxt", "jobcomp/none")
    why = foreign_cluster(ours, site)
    assert why and "not started by .ci/slurm.sh" in why and str(ours / "log" / "jobcomp.log") in why
    kept_none = "\n".join(line for line in site.splitlines() if not line.startswith("JobCompLoc"))
    assert "not set" in foreign_cluster(ours, kept_none)
    # a state folder that does not exist (the default /tmp/qualcode-slurm, never started here)
    assert foreign_cluster(tmp_path / "never-started", site)


def test_a_stale_state_folder_is_not_taken_for_a_running_cluster(tmp_path):
    """The settings match, but the pid file names no running process: not the controller .ci/slurm.sh started."""
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that has just ended
    slurm_dir = _state(tmp_path, proc.pid)
    why = foreign_cluster(slurm_dir, _scontrol(slurm_dir))
    assert why and str(slurm_dir / "slurmctld.pid") in why and "no process running" in why
