"""Fault campaign: cut runs short in every way we know and check that nothing is lost.

    python benchmarks/fault_campaign.py [--only NAME ...]

Each fault runs pytest (or the launcher) on a small spec in a fresh folder with its own TMPDIR,
injects the fault, and judges the outcome: reports valid (JSON parses and has the session schema,
junit.xml parses where the session could write it), ``complete`` true only when every selected case
has a result, no process of the run left alive, no temporary folder (``llmcomm-launch-*``,
``pymp-*``, ``torchelastic_*``, ``.llmcomm-*``) left behind, and the fault's own expectation (the
right rank named, a one-line message, …).  Prints one row per fault: clean, or not clean and why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SPEC = """\
name: mini
engine: {preset: tiny, n_layers: 2}
workload: {batch: [1], prompt_len: 8, gen_len: 3}
layouts: ["1x1", "2x1", "1x2", "2x2"]
repeats: 2
warmup: 0
"""
LEAKS = ("llmcomm-launch-", "pymp-", "torchelastic_")


class Run:
    """One pytest session in its own folder."""

    def __init__(self, root: Path, *args: str, report_dir: str = "reports"):
        self.root, self.reports = root, root / report_dir
        self.tmp = root / "tmp"
        self.tmp.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                                      f"--llmcomm-report-dir={report_dir}", *args], cwd=root, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.seen: set[int] = set()

    def watch(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.seen |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def wait_items(self, n: int = 1, timeout: float = 240) -> None:
        items = self.reports / "llmcomm-items.jsonl"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.watch()
            with contextlib.suppress(OSError):
                if len(items.read_text().splitlines()) >= n:
                    return
            time.sleep(0.05)

    def wait_ranks(self, n: int, timeout: float = 240) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.watch()
            with contextlib.suppress(psutil.Error):
                servers = [p for p in psutil.Process(self.proc.pid).children()
                           if "forkserver" in " ".join(p.cmdline())]
                ranks = [c for s in servers for c in s.children()]
                if len(ranks) >= n:
                    time.sleep(1.0)  # into their collectives
                    return ranks
            time.sleep(0.05)
        return []

    def end(self, timeout: float = 240) -> str:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")

    def problems(self, *, complete: bool | None, junit: bool = True, finished: bool = True) -> list[str]:
        why = []
        _, alive = psutil.wait_procs([p for p in map(_proc, self.seen) if p], timeout=15)
        alive = [p for p in alive if _running(p)]
        if alive:
            why.append(f"orphans {[p.pid for p in alive]}")
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        leaked = [p.name for p in self.tmp.iterdir() if p.name.startswith(LEAKS)]
        if self.reports.is_dir():
            leaked += [p.name for p in self.reports.iterdir() if p.name.startswith(".llmcomm-")]
        if leaked:
            why.append(f"leaked {leaked}")
        if complete is None:
            return why
        try:
            report = json.loads((self.reports / "llmcomm-report.json").read_text())
            assert report["schema"] == "llmcomm.session/2"
        except (OSError, ValueError, AssertionError, KeyError) as exc:
            return why + [f"JSON report invalid: {exc}"]
        if report["complete"] is not complete:
            why.append(f"complete: {report['complete']} with {len(report['items'])}/{report.get('selected')} cases")
        if finished != (report["exitstatus"] is not None):
            why.append(f"exitstatus {report['exitstatus']}")
        if junit:
            from junitparser import JUnitXml

            try:
                JUnitXml.fromfile(str(self.reports / "junit.xml"))
            except Exception as exc:  # noqa: BLE001
                why.append(f"junit.xml invalid: {type(exc).__name__}")
        return why


def _proc(pid):
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid)
    return None


def _running(p) -> bool:
    with contextlib.suppress(psutil.Error):
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    return False


def _folder() -> Path:
    root = Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    (root / "slo_specs").mkdir()
    (root / "slo_specs" / "mini.yaml").write_text(SPEC)
    (root / "pytest.ini").write_text("[pytest]\n")
    return root


# -- the faults ------------------------------------------------------------------------------------


def rank_kill(layout: str, inject: str):
    def fault(root):
        run = Run(root, "-k", layout, "--llmcomm-inject", inject, "--llmcomm-timeout", "120")
        ranks = run.wait_ranks(int(layout[2]) * int(layout[6]))
        victim = ranks[-1]
        victim.kill()
        out = run.end()
        why = run.problems(complete=True)
        if "killed by signal 9" not in out and "exited with code -9" not in out:
            why.append("the killed rank is not named")
        return why
    return fault


def interrupt(signals: list[int], gap_s: float = 0.05):
    def fault(root):
        run = Run(root)
        run.wait_items(1)
        for i, sig in enumerate(signals):
            if i:
                time.sleep(gap_s)
            run.proc.send_signal(sig)
        out = run.end()
        killed = signals[-1] == signal.SIGKILL
        why = run.problems(complete=False, junit=not killed, finished=not killed)
        if killed:  # the report is rebuilt from the item log
            rebuilt = subprocess.run([sys.executable, "-m", "llmcomm_tests.commands", "report", str(run.reports)],
                                     capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if rebuilt.returncode or "rebuilt from" not in rebuilt.stdout:
                why.append(f"llmcomm report: {rebuilt.stderr.strip()[:200]}")
        if "INTERNALERROR" in out or "Traceback (most recent call last)" in out.split("KeyboardInterrupt")[-1]:
            why.append("a traceback while writing reports")
        return why
    return fault


def fork_server_kill(root):
    run = Run(root, "-k", "tp2-pp1", "--llmcomm-inject", "all_reduce:hang=1", "--llmcomm-timeout", "120")
    ranks = run.wait_ranks(2)
    ranks[0].parent().kill()
    out = run.end()
    why = run.problems(complete=True)
    if "fork server" not in out:
        why.append("the dead fork server is not named")
    return why


def concurrent(root):
    first = Run(root)
    first.wait_items(1)
    second = Run(root, "-k", "tp1-pp1")
    out2 = second.end()
    first.end()
    why = first.problems(complete=True)
    if second.proc.returncode != 4 or "in use by another session" not in out2:
        why.append(f"the second session was not refused (exit {second.proc.returncode})")
    return why


def _tmpfs(root: Path, size: str, read_only: bool = False) -> Path:
    folder = root / "mnt"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    (folder / "reports").mkdir()
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    return folder


def read_only_folder(root):
    mnt = _tmpfs(root, "64k", read_only=True)
    try:
        run = Run(root, "-k", "tp1-pp1", report_dir="mnt/reports")
        out = run.end()
        why = run.problems(complete=None)
        if run.proc.returncode != 4 or "not writable: Read-only file system" not in out or "INTERNALERROR" in out:
            why.append(f"not one line before the first case (exit {run.proc.returncode})")
        return why
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def full_folder(root):
    mnt = _tmpfs(root, "256k")
    try:
        run = Run(root, "-k", "b1", report_dir="mnt/reports")
        run.wait_items(1)
        with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:  # the disk fills mid-session
            while True:
                f.write(b"x" * 4096)
                f.flush()
        out = run.end()
        why = run.problems(complete=None)
        if "INTERNALERROR" in out or "No space left on device" not in out:
            why.append("a full disk is not one line per file")
        reports = mnt / "reports"
        for name in ("llmcomm-report.json", "junit.xml"):
            path = reports / name
            if path.exists() and path.stat().st_size == 0:
                why.append(f"{name} left empty")
        lines = (reports / "llmcomm-items.jsonl").read_text().splitlines()
        if any(not _json(line) for line in lines):
            why.append("a torn line in the item log")
        return why
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def _json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def damaged_baseline(root):
    Run(root, "-k", "tp2-pp1", "--llmcomm-baseline-save", "before").end()
    stored = next((root / ".llmcomm").rglob("*.json"))
    stored.write_text(stored.read_text()[:100])
    run = Run(root, "-k", "tp2-pp1", "--llmcomm-baseline-compare", "before", "-rA")
    out = run.end()
    why = run.problems(complete=True)
    report = json.loads((run.reports / "llmcomm-report.json").read_text())
    if len(report["items"]) != 1 or "Traceback (most recent" in out or "cannot read baseline" not in out:
        why.append("the case lost its results or the baseline row has no reason")
    return why


def damaged_report(root):
    run = Run(root, "-k", "tp1-pp1")
    run.end()
    why = run.problems(complete=True)
    path = run.reports / "llmcomm-report.json"
    report = json.loads(path.read_text())
    report["items"][0]["verdict"] = {"case_id": "x", "rows": [{"check": 1}]}
    path.write_text(json.dumps(report))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for cmd in (["report", str(run.reports)], ["budgets", "suggest", str(run.reports)]):
        done = subprocess.run([sys.executable, "-m", "llmcomm_tests.commands", *cmd], capture_output=True, text=True,
                              env=env)
        if done.returncode != 2 or len(done.stderr.strip().splitlines()) != 1 or str(path) not in done.stderr:
            why.append(f"llmcomm {cmd[0]}: {done.stderr.strip()[:120]!r}")
    return why


FAULTS = {
    "rank kill TP2": rank_kill("tp2-pp1", "all_reduce:hang=1"),
    "rank kill PP2": rank_kill("tp1-pp2", "send:hang=0"),
    "rank kill TP2xPP2": rank_kill("tp2-pp2", "all_reduce:hang=1"),
    "pytest SIGINT": interrupt([signal.SIGINT]),
    "pytest double SIGINT (50 ms)": interrupt([signal.SIGINT, signal.SIGINT]),
    "pytest SIGTERM": interrupt([signal.SIGTERM]),
    "pytest SIGKILL": interrupt([signal.SIGKILL]),
    "fork server kill": fork_server_kill,
    "two sessions, one folder": concurrent,
    "read-only report folder": read_only_folder,
    "full report folder (256k tmpfs)": full_folder,
    "truncated baseline": damaged_baseline,
    "damaged report item": damaged_report,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=None, help="fault names (substrings)")
    args = parser.parse_args()
    rows = []
    for name, fault in FAULTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        start = time.monotonic()
        root = _folder()
        try:
            why = fault(root)
        except Exception as exc:  # noqa: BLE001 - a campaign row, not a crash of the campaign
            why = [f"campaign error: {type(exc).__name__}: {exc}"]
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append((name, "clean" if not why else "NOT CLEAN: " + "; ".join(why), time.monotonic() - start))
        print(f"{name:34s} {rows[-1][1]}  ({rows[-1][2]:.0f} s)", flush=True)
    print(f"\n{sum(r[1] == 'clean' for r in rows)}/{len(rows)} clean")
    return 0 if all(r[1] == "clean" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
